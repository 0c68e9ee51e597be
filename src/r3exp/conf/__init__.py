"""r3exp's packaged Hydra configs (found by Hydra as ``pkg://r3exp.conf``)."""
