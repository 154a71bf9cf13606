"""``ketos test``: evaluation of a model on transcribed lines, with its text, JSON and HTML reports."""
