"""Saving a trained guide and loading it back: ``save``/``load``
(:mod:`.save_load`), the file's format and errors (:mod:`.guide_file`), and the
model's latent sites as the file records them (:mod:`.model_facts`)."""
