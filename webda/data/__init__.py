"""Data for webda: folder layout, decoding (PyAV, Pillow), chunk sampling, transforms, datasets,
shot keyframes, web/target overlap removal and the generated webly-supervised dataset."""
