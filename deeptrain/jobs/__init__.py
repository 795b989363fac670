"""Ray-side orchestration: Ray Train runs, Ray Data pipelines, the embedded cluster."""
