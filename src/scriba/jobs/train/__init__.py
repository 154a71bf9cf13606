"""``ketos train``: supervised CTC training of a recognition network."""
