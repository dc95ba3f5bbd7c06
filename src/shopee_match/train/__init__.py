"""Training: P×K fine-tuning of the encoders and the cross-encoder with its pair mining and
gray-zone labels. Imports data, embed and match."""
