"""Fine-tuned detectors after the run: saved and loaded with what they were trained with,
chosen for predicting, applied to a folder of images, exported to ONNX."""
