"""Applications: the command lines, the demo and its views, the dashboard, the local servers."""
