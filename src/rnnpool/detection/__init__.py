"""S3FD-style face detection on RNNPool backbones: boxes, anchors, matching, loss, decoding."""
