"""ResNet-RS (Bello et al. 2021, "Revisiting ResNets: Improved Training and Scaling Strategies").

    python -m resnet_jax.main --config=configs/recipe_resnet_rs.py --workdir=runs/rs50_i160 \\
        --config.data_dir=/path/to/tensorflow_datasets
    python -m resnet_jax.main --config=configs/recipe_resnet_rs.py:depth=101,size=192 \\
        --workdir=runs/rs101_i192 --config.data_dir=/path/to/tensorflow_datasets

Arguments (after ':'): depth and size, one of the published pairs (PUBLISHED below;
default ResNet-RS-50 at 160x160).

Source: the authors' released configs, tensorflow/tpu
models/official/resnet/resnet_rs/configs/resnetrs{depth}_i{size}.yaml (batch 4096,
base_learning_rate 0.1 per 256, momentum 0.9, weight_decay 4e-5, label_smoothing 0.1,
moving_average_decay 0.9999, bn_momentum 0, randaugment 2 layers, se_ratio 0.25, ResNet-D
stem and shortcut, stem max-pool replaced by a conv, 109,475 steps = 350 epochs; dropout,
drop_connect and RandAugment magnitude per model), and TF Model Garden's
official/vision/configs/experiments/image_classification/imagenet_resnetrs50_i160.yaml for
the schedule the paper describes (SGD momentum 0.9, cosine from 1.6, linear warmup of 1560
steps = 5 epochs), with the architecture as timm's resnetrs* (name='resnetrs50',
shortcut='D'), whose weights were converted from these checkpoints.

Expected (published, the authors' tensorflow/tpu models/official/resnet/resnet_rs README,
top-1): ResNet-RS-50 at 160: 78.8 %; the other pairs in PUBLISHED.

What differs here:
- RandAugment is timm's op set at the TF magnitude and layer count, each chosen op always
  applied ('p1.0', as TF's distort_image_with_randaugment does); TF's list has Cutout,
  timm's has not, and translations are relative (timm) instead of 100 pixels (TF).
  Magnitude 15 is above timm's default clamp of 10, hence 'mmax15'.
- The EMA decay ramps as 1 - 9 / (8 + n) after update n (timm's warmup with gamma 9 and
  power 1), TF's as min(0.9999, (1 + n) / (10 + n)) = 1 - 9 / (10 + n): the same ramp two
  updates later. The evaluations beside the EMA's use the raw weights with bn_momentum
  0, i.e. the last batch's BatchNorm statistics (as TF's): read the EMA's top-1.
- Stochastic depth (depth >= 200) follows timm's rule here, drop_path_rate * i / (N - 1)
  for block i of N; TF's is per stage, drop_connect_rate * (stage + 1) / 5 (0.04, 0.06,
  0.08, 0.1 for 0.1): the same largest rate, more dropping in the early stages here.
- Weight decay on conv and dense kernels only (TF 1's resnet_main also decays the dense
  and SE biases); training crops resized bilinearly (TF: bicubic); BatchNorm statistics
  over the whole global batch (TF: per TPU core).
- tensorflow/tpu's TF 1 resnet_main.py itself has only a stepped schedule; cosine here, as
  the paper and Model Garden's config have it.
"""

from resnet_jax import configlib
from resnet_jax.errors import ConfigError

imagenet_base = configlib.sibling(__file__, 'imagenet_base')

# (depth, image size) -> (dropout before the classifier, stochastic depth rate,
# RandAugment magnitude, published top-1 %): tensorflow/tpu resnet_rs/configs/*.yaml
# (dropout_rate, drop_connect_rate (null = 0), randaug_magnitude) and its README.
PUBLISHED = {
    (50, 160): (0.25, 0.0, 10, 78.8),
    (101, 160): (0.25, 0.0, 10, 80.3),
    (101, 192): (0.25, 0.0, 15, 81.2),
    (152, 192): (0.25, 0.0, 15, 82.0),
    (152, 224): (0.25, 0.0, 15, 82.2),
    (152, 256): (0.25, 0.0, 15, 83.0),
    (200, 256): (0.25, 0.1, 15, 83.4),
    (270, 256): (0.25, 0.1, 15, 83.8),
    (350, 256): (0.25, 0.1, 15, 84.0),
    (350, 320): (0.4, 0.1, 15, 84.2),
    (420, 320): (0.4, 0.1, 15, 84.4),
}


def rand_augment(magnitude: int) -> str:
  """TF's RandAugment(2 layers, magnitude) as a timm string (docstring, "What differs")."""
  clamp = f'-mmax{magnitude}' if magnitude > 10 else ''
  return f'rand-m{magnitude}{clamp}-n2-p1.0'


def get_config(arg=None):
  args = configlib.parse_arg(arg, depth=50, size=160)
  if (args.depth, args.size) not in PUBLISHED:
    pairs = ', '.join(f'depth={d},size={s}' for d, s in PUBLISHED)
    raise ConfigError(f'ResNet-RS-{args.depth} at {args.size} was not published; '
                      f'valid: {pairs}')
  dropout, drop_path, magnitude, _ = PUBLISHED[(args.depth, args.size)]
  config = imagenet_base.get_config(depth=args.depth)
  # timm's resnetrs{depth}: deep stem (32, 32, 64), conv instead of the stem max-pool,
  # SE 0.25 (registry); avg-pool shortcut (use_resnetd_stem, replace_stem_max_pool,
  # se_ratio 0.25, resnetd_shortcut in the yaml).
  config.model.name = f'resnetrs{args.depth}'
  config.model.shortcut = 'D'
  # The last BatchNorm of each block starts at 0 (TF resnet_model.py: init_zero=True).
  config.model.zero_init_residual = True
  # bn_momentum 0: running statistics = the last batch's, averaged by the EMA instead
  # (yaml bn_momentum: 0; Model Garden norm_momentum: 0.0).
  config.model.bn_momentum = 0.0
  # yaml dropout_rate (on the pooled features) and drop_connect_rate.
  config.model.dropout_rate = dropout
  config.model.drop_path_rate = drop_path
  # yaml image_size, for training and evaluation (centre 0.875 crop, the base's).
  config.image_size = args.size
  # yaml augment_name randaugment, randaug_num_layers 2, randaug_magnitude.
  config.rand_augment = rand_augment(magnitude)
  # yaml train_batch_size 4096; lr base_learning_rate 0.1 x 4096 / 256 = 1.6 (Model
  # Garden: initial_learning_rate 1.6), plain momentum SGD (Model Garden type 'sgd').
  config.batch_size = 4096
  config.optimizer = 'sgd'
  config.learning_rate = 0.1 * config.batch_size / 256
  # yaml weight_decay 4e-5 (L2 in the loss, as here), label_smoothing 0.1.
  config.weight_decay = 4e-5
  config.label_smoothing = 0.1
  # yaml moving_average_decay 0.9999, with TF's num_updates ramp (docstring).
  config.ema_decay = 0.9999
  config.ema_warmup = True
  config.ema_warmup_gamma = 9.0
  config.ema_warmup_power = 1.0
  # yaml train_steps 109,475 x 4096 / 1,281,167 images = 350 epochs.
  config.num_epochs = 350.0
  return config
