"""Figures and the report of a ``webda demo`` run, one module per figure or concept.

- :mod:`~webda.report.ground_truth`: the dataset card (noise flags, duplicates, spliced shots) by file;
- :mod:`~webda.report.curves`: training curves from ``metrics.jsonl``;
- :mod:`~webda.report.confusion`: confusion-matrix image and per-class accuracy table;
- :mod:`~webda.report.features`: embeddings of image files by a trained network;
- :mod:`~webda.report.tsne`: t-SNE of web and target features before/after adaptation (paper Fig. 2);
- :mod:`~webda.report.attention_grid`: web images with the highest and lowest attention (paper Fig. 6);
- :mod:`~webda.report.overlap`: what overlap removal dropped, against the planted duplicates;
- :mod:`~webda.report.recorded_ablation`: the committed ``webda ablate`` table (paper Table 1, synthetic data);
- :mod:`~webda.report.document`: a report as blocks (text, tables, images) written as Markdown and HTML;
- :mod:`~webda.report.plotting`: matplotlib on its non-interactive Agg backend, and how a figure is saved;
- :mod:`~webda.report.demo_report`: assembles all of them from a demo run's folder.
"""
