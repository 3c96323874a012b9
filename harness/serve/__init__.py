"""`mlmark serve`: a measurement server on a board, for `mlmark measure` and `mlmark fleet` on a workstation.

app.py holds the routes, the token check and the command line (aiohttp); queue.py the bounded queue
and its one worker; store.py the uploaded models kept by SHA-256 (least recently used first out)
and the check that an upload is an ONNX model; child.py the child process that runs one
measurement with the harness's own machinery, so that a crash there cannot take the server down.
"""

#: The environment variable that holds the token (server and clients): off the process list, unlike --token.
TOKEN_ENV = "MLMARK_SERVE_TOKEN"
DEFAULT_PORT = 8765
