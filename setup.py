from setuptools import find_packages, setup

setup(
    name="medvlp-hf",
    version="0.1.0",
    description="HuggingFace-native model zoo for medical vision-language pre-training",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["medvlp_hf", "medvlp_hf.*"]),
    # the `medvlp` command's entry point: runs medvlp_hf/cli.py without importing the package (fast --help)
    py_modules=["medvlp_cli"],
    package_data={"medvlp_hf": ["**/*.txt", "**/*.json", "**/LICENSE*", "**/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "transformers>=5.23,<6",
        "accelerate",
        "datasets",
        "evaluate",
        "safetensors",
        "peft",
        "huggingface-hub",
        "pillow",
        "numpy",
        "pyyaml",
    ],
    extras_require={
        "dicom": ["pydicom>=3"],
        "metrics": ["pycocoevalcap", "scikit-learn"],
        "dev": ["pytest", "pydicom>=3", "pycocoevalcap", "scikit-learn"],
    },
    entry_points={"console_scripts": ["medvlp=medvlp_cli:main"]},
)
