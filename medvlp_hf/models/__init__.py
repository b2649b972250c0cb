"""One folder per model; each folder imports only torch, transformers and its own files."""
