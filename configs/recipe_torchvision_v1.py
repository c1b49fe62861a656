"""torchvision's V1 ResNet recipe (the recipe of its IMAGENET1K_V1 weights).

    python -m resnet_jax.main --config=configs/recipe_torchvision_v1.py --workdir=runs/tv_v1 \\
        --config.data_dir=/path/to/tensorflow_datasets

Argument (after ':'): depth (18, 34, 50, 101, 152; default 50).

Source: pytorch/vision references/classification/README.md ("all models have been
trained on 8x V100 GPUs with the following parameters": --batch_size 32 per GPU,
--epochs 90, --lr 0.1, --momentum 0.9, --wd 1e-4, --lr-step-size 30, --lr-gamma 0.1;
"ResNet: torchrun --nproc_per_node=8 train.py --model $MODEL") and train.py's
defaults (plain SGD momentum, no warmup, no label smoothing, bilinear
RandomResizedCrop 224 + flip; evaluation Resize(256) + CenterCrop(224)).

Expected (published): ResNet-50 76.13 % top-1 (torchvision's ResNet50_Weights.
IMAGENET1K_V1 model card; ResNet-18 69.76, -34 73.31, -101 77.37, -152 78.31).

What differs here: weight decay applies to conv and dense kernels only (torchvision's
train.py decays every parameter, BatchNorm and biases included, unless
--norm-weight-decay is given); bfloat16 compute with float32 parameters (torchvision:
float32); BatchNorm statistics over the whole global batch of 256 (torchvision: per GPU,
32 images, no SyncBN).
"""

from resnet_jax import configlib

imagenet_base = configlib.sibling(__file__, 'imagenet_base')


def get_config(arg=None):
  args = configlib.parse_arg(arg, depth=50)
  config = imagenet_base.get_config(depth=args.depth)
  # Resize(256) + CenterCrop(224): train.py's --val-resize-size / --val-crop-size defaults.
  config.eval_resize = 256
  # 8 GPUs x --batch-size 32 (references/classification/README.md).
  config.batch_size = 256
  # torch.optim.SGD(momentum=0.9), not Nesterov (train.py, --opt sgd default).
  config.optimizer = 'sgd'
  # --lr 0.1 for the global batch of 256, no warmup (README; train.py --lr-warmup-epochs 0).
  config.learning_rate = 0.1
  config.warmup_epochs = 0.0
  # StepLR(step_size=30, gamma=0.1) over 90 epochs: x0.1 at epochs 30 and 60 (README).
  config.schedule = 'piecewise'
  config.lr_boundaries_epochs = (30.0, 60.0)
  config.lr_decay_factor = 0.1
  return config
