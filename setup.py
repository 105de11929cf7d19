"""flan-t5x: FLAN-style multi-task instruction finetuning of T5 on JAX."""
import setuptools

# apache-beam caps protobuf below 7, and sentencepiece 0.2.3's generated code refuses a protobuf
# older than 7 (seqio then fails to import), so with Beam sentencepiece stays at 0.2.2, whose code
# runs on either. [tfrecord] brings the CRC that Beam's TFRecord writer needs.
CACHE_REQUIRES = ["apache-beam[tfrecord]>=2.50", "sentencepiece>=0.2,<0.2.3"]
# notebooks/: pandas for the DataFrame views (flan_tasks.inspect_views, flan_t5x.interactive), a Jupyter
# kernel and nbclient to run them headless (`jupyter execute`, tests/test_notebooks.py).
# nbconvert: `jupyter nbconvert --execute` as the README shows; ipywidgets: tqdm's notebook progress bar.
NOTEBOOK_REQUIRES = ["pandas>=2", "ipykernel>=6", "nbclient>=0.9", "nbformat>=5.9", "nbconvert>=7", "ipywidgets>=8"]
# `python -m flan_t5x.plan` compiles for Cloud TPU slices with libtpu's compiler, no TPU needed; jax[tpu]
# brings the libtpu release that matches the installed jax. On a host with neither TPU nor GPU,
# flan_t5x keeps JAX on the CPU so that the other jobs never load it (flan_t5x/__init__.py).
TPU_REQUIRES = ["jax[tpu]>=0.4.35"]
# The documentation site (mkdocs.yml; `make docs`): MkDocs with the notebooks rendered and the API
# reference read from the docstrings.
DOCS_REQUIRES = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "mkdocs-jupyter>=0.25"]

setuptools.setup(
    name="flan-t5x",
    version="0.1.0",
    description="FLAN-style instruction finetuning of T5 on JAX: SeqIO tasks and a T5X-compatible engine",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["flan_tasks", "flan_tasks.*", "flan_t5x", "flan_t5x.*"]),
    # flan_t5x's versions of T5X's include files (t5x/configs/runs/*.gin, t5x/examples/t5/t5_1_1/*.gin).
    package_data={"flan_t5x": ["t5x_names/gin/t5x/configs/runs/*.gin", "t5x_names/gin/t5x/examples/t5/t5_1_1/*.gin"]},
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.9",
        "seqio>=0.0.19",
        "tensorflow>=2.16,<2.22",
        "tensorflow-text>=2.16,<2.22",
        "tensorflow-datasets>=4.9.4",
        "gin-config>=0.5",
        "rouge-score>=0.1.2",
        "sentencepiece>=0.2",
        "tensorstore>=0.1.60",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "numpy>=1.26",
        "pyarrow>=14",  # the Flan Collection's Parquet shards (flan_tasks.shards)
        "matplotlib>=3.7",  # study and compare charts
        "tensorboard>=2.16",  # every run ends with `tensorboard --logdir MODEL_DIR`
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6.100", *CACHE_REQUIRES,  # hypothesis: reader fuzzing
                 *NOTEBOOK_REQUIRES, *TPU_REQUIRES],
        "tpu": TPU_REQUIRES,
        "docs": DOCS_REQUIRES,
        "notebook": NOTEBOOK_REQUIRES,
        # SeqIO's offline cache (python -m seqio.scripts.cache_tasks_main) runs on Apache Beam.
        "cache": CACHE_REQUIRES,
        # The Hugging Face peer for benchmarks and export parity; never needed by the default tests.
        "bench": ["torch>=2.4", "transformers>=4.45", "peft>=0.13"],
    },
)
