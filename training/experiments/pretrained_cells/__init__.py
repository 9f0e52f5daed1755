"""The experiments behind docs/research/cells.md's entries on an ImageNet-pretrained MobileNetV2
encoder for the whole-cell model (sessions 26-27): folds and the shipped schedule's first stage
(``fold``, ``shipped``), their scores (``score_shipped``, ``diameter``), the diameter estimate's
passes (``log_passes``, ``rules``, ``score_rule``, ``style_size``), int8 and page speed (``int8``,
``page``). Each is a script, ``python -m training.experiments.pretrained_cells.NAME``,
writing under ``runs/exp/`` (not in git); the whole-cell sets must be converted first
(``python -m training.datasets cells_bbbc018`` and the rest)."""
