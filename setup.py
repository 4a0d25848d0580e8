from setuptools import find_packages, setup

setup(
    name="gp-loss",
    version="0.1.0",
    description="Discover loss functions by evolutionary search over typed DEAP primitive trees",
    packages=find_packages(include=["gp_loss", "gp_loss.*", "primitives", "primitives.*"]),
    # the pretrained small backbones (gp_loss.models.pretrain) and how each was made
    package_data={"gp_loss.models": ["pretrained/*.pt", "pretrained/*.pt.json"]},
    python_requires=">=3.10",
    install_requires=[
        "deap>=1.4",
        "torch>=2.14",
        "torchvision>=0.29",
        "numpy",
        "scikit-learn>=1.3",
        "scipy>=1.11",
        "scoop",
        "ray>=2.40",
        "pycocotools>=2.0",
        "tqdm",
        "matplotlib",
        "PyYAML",
    ],
    entry_points={"console_scripts": ["gp-loss=gp_loss.cli:entry"]},
)
