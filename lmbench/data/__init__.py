"""Images and landmarks: reading files safely, fetching public datasets, checking a dataset,
resizing to the input size and back, and the decoded-data cache."""
