"""cpjax: learned image compositing in JAX/Flax."""
