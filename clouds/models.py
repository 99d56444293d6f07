"""Clouds: the trust relationship between Raydeck and a data plane (see issue 3)."""
