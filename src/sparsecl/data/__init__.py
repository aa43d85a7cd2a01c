"""Data: file readers, validation, download, tensors on a device, streams of tasks, batching."""
