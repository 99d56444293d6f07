"""Services: Ray Serve apps behind a stable endpoint (Service, ServiceVersion)."""
