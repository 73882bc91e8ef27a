"""pip-installable library and CLIs, without ROS (e.g. on a training machine).

ROS builds use CMakeLists.txt (ament_cmake + rosidl) instead; see scripts/setup_env.sh.
Without ROS, anytime_perception.msg and anytime_perception.ros are unavailable.
"""
from setuptools import find_packages, setup

setup(
    name="anytime_perception",
    version="0.1.0",
    description="Anytime perception: staged detection under MAC budgets, deadlines and CPU load",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["anytime_perception", "anytime_perception.*"]),
    # config/modes.yaml is found under <prefix>/share/anytime_perception/config (runtime.modes)
    data_files=[("share/anytime_perception/config", ["config/modes.yaml", "config/params.yaml"])],
    install_requires=[
        "numpy",
        "pyyaml",
        "psutil",
        "opencv-python-headless",
        "rosbags",  # rosbag2 recordings (anytime_bag, anytime_replay --bag)
    ],
    extras_require={
        # Exact torch pin: an open range pulls a multi-GB CUDA build from PyPI.
        "eval": ["pycocotools", "tqdm"],
        "train": ["torch==2.13.0", "onnx", "tqdm", "pycocotools", "matplotlib"],
        # ONNX Runtime: exactly one of these (both provide the onnxruntime module and cannot
        # coexist): pip install '.[cpu]' or, for CUDA/TensorRT, pip install '.[gpu]'.
        "cpu": ["onnxruntime"],
        "gpu": ["onnxruntime-gpu"],
    },
    entry_points={
        "console_scripts": [
            "anytime_node=anytime_perception.ros.node:main",
            "anytime_managed_node=anytime_perception.ros.managed_node:main",
            "anytime_replay=anytime_perception.ros.replay:main",
            "anytime_demo=anytime_perception.ros.demo:main",
            "big_model_node=anytime_perception.ros.big_model_node:main",
            "anytime_train=anytime_perception.training.__main__:main",
            "anytime_export=anytime_perception.export.__main__:main",
            "anytime_eval=anytime_perception.eval.__main__:main",
            "anytime_bag=anytime_perception.bag.__main__:main",
        ],
    },
)
