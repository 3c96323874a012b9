"""The trtexec target: engines built and timed by TensorRT's trtexec, its logs read into build data and scores."""
