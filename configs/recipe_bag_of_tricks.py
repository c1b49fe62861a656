"""Bag of Tricks ResNet-D (He et al. 2019, "Bag of Tricks for Image Classification with CNNs").

    # The teacher: ResNet-152-D with cosine decay and label smoothing, no mixup.
    python -m resnet_jax.main --config=configs/recipe_bag_of_tricks.py:depth=152,mixup=false \\
        --workdir=runs/bot_r152d --config.data_dir=/path/to/tensorflow_datasets
    # The student with every trick: ResNet-50-D, mixup, distilled from that teacher.
    python -m resnet_jax.main --config=configs/recipe_bag_of_tricks.py:teacher=runs/bot_r152d \\
        --workdir=runs/bot_r50d --config.data_dir=/path/to/tensorflow_datasets

Arguments (after ':'): depth (50; 152 for the teacher), mixup (true: alpha 0.2 and 200
epochs; false: 120 epochs), teacher (a workdir whose model is distilled into this one;
'' = none).

Source: the paper's sections 3 (batch 1024, lr 0.1 x 1024/256 = 0.4, 5-epoch linear
warmup, zero gamma, no bias decay, FP16), 4 (ResNet-D: ResNet-B's stride on the 3x3,
ResNet-C's three 3x3 stem convs, ResNet-D's 2x2 average pool before the 1x1 projection),
5 (cosine decay, label smoothing 0.1, distillation from a ResNet-152-D teacher trained with
cosine and label smoothing, mixup alpha 0.2 with 200 instead of 120 epochs) and 2.1 (NAG,
the baseline's optimizer); checked against the paper's code, dmlc/gluon-cv
scripts/classification/imagenet/train_imagenet.py (Nesterov 'nag', momentum 0.9, wd 1e-4,
--no-wd on BatchNorm gamma/beta and biases, --temperature 20) and the model zoo's
commands (dmlc/web-data gluoncv/logs/classification/imagenet/resnet50_v1d{,-mixup}.sh:
--lr 0.4 --lr-mode cosine --batch-size 128 x 8 GPUs --warmup-epochs 5 --last-gamma --no-wd
--label-smoothing [--mixup] --num-epochs 120 [200] --dtype float16).

Expected (published, the paper's Table 6, ResNet-50-D top-1): 79.29 % with mixup and
distillation (mixup=true, teacher=DIR: the second command); 79.15 % mixup without distillation
(no teacher; gluon-cv's resnet50_v1d mixup model: 79.15); 78.67 % distillation without
mixup (mixup=false, teacher=...); 78.31 % neither (mixup=false).

What differs here: no colour jitter (brightness/saturation/hue in [0.6, 1.4]) and no PCA
lighting noise, which the paper's baseline augmentation has (augment='imagenet' is the
random resized crop and flip only); the distillation loss is the paper's equation,
CE + T^2 * CE_soft, where gluon-cv's code weighs the two 0.5 / 0.5 (--hard-weight 0.5),
which halves the loss and so the effective learning rate; bfloat16 compute (paper: FP16
with an FP32 master copy); BatchNorm statistics over the whole global batch of 1024
(gluon-cv: per GPU, 128 images); the temperature T = 20 is the paper's code's value
(gluon-cv's --temperature default, added by the paper's first author), not re-read from
the paper's text here.
"""

from resnet_jax import configlib

imagenet_base = configlib.sibling(__file__, 'imagenet_base')


def get_config(arg=None):
  args = configlib.parse_arg(arg, depth=50, mixup=True, teacher='')
  # imagenet_base is already section 3's large-batch setting: batch 1024, Nesterov
  # momentum 0.9, lr 0.1 x 1024 / 256, 5 warmup epochs, cosine to 0, wd 1e-4 on kernels
  # only (the paper's "no bias decay"), bfloat16.
  config = imagenet_base.get_config(depth=args.depth)
  # ResNet-D (section 4, Figure 2): ResNet-C's deep stem (3x3 convs of 32, 32, 64) and
  # the avg-pool + 1x1 projection shortcut; the 3x3 stride (ResNet-B) is v1.5, the default.
  config.model.stem = 'deep'
  config.model.shortcut = 'D'
  # Zero gamma: the last BatchNorm of each residual block starts at 0 (section 3.1;
  # gluon-cv --last-gamma).
  config.model.zero_init_residual = True
  # Resize(256) + CenterCrop(224): gluon-cv's eval transform (--crop-ratio 0.875).
  config.eval_resize = 256
  # Label smoothing eps = 0.1 (section 5; gluon-cv --label-smoothing, eta=0.1).
  config.label_smoothing = 0.1
  if args.mixup:
    # Mixup alpha = 0.2 on every batch, trained 200 epochs instead of 120 (section 5;
    # gluon-cv --mixup, --mixup-alpha default 0.2, resnet50_v1d-mixup.sh --num-epochs 200).
    config.mixup_alpha = 0.2
    config.num_epochs = 200.0
  else:
    # 120 epochs (section 2.1; gluon-cv resnet50_v1d.sh and resnet152_v1d.sh --num-epochs 120).
    config.num_epochs = 120.0
  # Distillation from a ResNet-152-D teacher with T = 20 (section 5; gluon-cv
  # --teacher resnet152_v1d, --temperature default 20).
  config.teacher = args.teacher
  config.distill_temperature = 20.0
  return config
