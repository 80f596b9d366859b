"""Small plugins and fake distributions for the plugin tests.

``tiny_backbone``, ``raises_in_hook`` and ``broken_import`` are ordinary tlkit plugin modules (the
last one cannot be imported); ``dists`` fakes installed distributions, in memory for
``importlib.metadata`` look-alikes and on disk for subprocesses.
"""
