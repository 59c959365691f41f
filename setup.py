"""Install teskd_mm: TESKD and DTSKD for MMPretrain."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope = {}
    with open(osp.join('teskd_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='teskd_mm',
    version=read_version(),
    description='Teacher Evolution via Self-Knowledge Distillation (TESKD) '
    'and Dual Teachers (DTSKD) for OpenMMLab MMPretrain',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['teskd_mm', 'teskd_mm.*']),
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0',
        'torchvision>=0.15',
        'mmengine==0.10.7',
        'mmpretrain==1.2.0',
        # mmengine 0.10.7 imports pkg_resources, gone from setuptools 82.
        'setuptools<82',
    ],
    extras_require={
        # Pure-Python mmcv for machines without a full mmcv build; leave it
        # out where full mmcv is installed, or it would shadow it.
        'lite': ['mmcv-lite>=2.0.0,<2.4.0'],
        'tests': ['pytest', 'pytest-xdist', 'matplotlib', 'scikit-learn'],
    },
    license='Apache-2.0',
    zip_safe=False,
)
