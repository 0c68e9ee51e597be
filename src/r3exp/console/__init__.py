"""What the console shows: the libraries' routine logs kept in the run directory, and the training progress bar."""
