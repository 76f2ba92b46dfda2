"""Wire formats, task and result types, configuration and errors shared by every role."""
