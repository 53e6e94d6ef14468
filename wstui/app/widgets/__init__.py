"""The app's widgets: layer tree, header, metric panel, plots, tensor table, findings list."""
