"""The ad server: in-memory targeting index, second-price auction, signed request ids, served-ads log."""
