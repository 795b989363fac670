"""Model architectures: one module per architecture, ``build_*`` functions per task.

See ``deeptrain.models.tasks`` for the model contract the builders follow.
"""
