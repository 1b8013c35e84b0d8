"""The encode pipeline: train the GAN and the real-data classifier, invert, condense, write the .lds file."""
