"""Training: plain PyTorch, no Ray (``deeptrain.jobs`` runs it on Ray Train).

- ``param_groups``: optimizer groups (head at ``lrate``, base at ``lrate × base_gradient_multiplier``,
  frozen base, no weight decay on norms/biases), ``make_optimizer``, ``set_train_mode``;
- ``schedule``: ``StepSchedule`` (per-epoch step schedule), ``items_per_epoch``, ``epoch_indices``;
- ``init_from``: ``load_state_dict_source``, ``apply_init_from``;
- ``loop``: the training loop.

Submodules are imported explicitly (``from deeptrain.training.schedule import StepSchedule``);
this package imports nothing on its own.
"""
