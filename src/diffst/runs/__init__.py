"""What a training run is: its resolved configuration and its checkpoint, and the network
rebuilt from them (below both training and inference)."""
