"""Synthetic data: made by `insarwatch synth`, `synth-dataset` and the demo, never by the daemon.

``physics`` is the forward model (sources, line of sight, atmosphere, noise); ``render``
draws phase to the files LiCSAR and Hephaestus publish; ``captions`` is the experts'
caption grammar; ``patches`` makes labelled Hephaestus-style patches and ``drop`` whole
frames in the LiCSAR layout with their truth. The runtime never imports this package
(see ARCHITECTURE.md).
"""
