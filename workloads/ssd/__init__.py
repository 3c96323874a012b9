"""SSD-MobileNet v1 post-processing in numpy: anchors.py (the 1917 anchors), postprocess.py (decoding, NMS)."""
