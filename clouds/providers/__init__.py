"""Cloud drivers. This package is the only place that imports boto3 or
google-cloud-compute; the rest of Raydeck talks to `CloudProvider`."""
