"""The jobs: train, pretrain, evaluate (ketos test) and compile, each a story read top to bottom; none imports another."""
