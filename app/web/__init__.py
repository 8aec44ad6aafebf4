"""The dashboard: a live web page of the network and Prometheus metrics (`metro dashboard`)."""
