"""Op-by-op comparison with PyTorch of calls written as they appear in public PyTorch example code
(pytorch/examples, the pytorch/tutorials scripts), each case naming where it comes from.

Every case is one function written once against a library namespace ``L`` (``L.torch``, ``L.nn``,
``L.F``: torch's modules, or pyneural's under the same names), so the same text runs on both. It
runs on the same inputs (float32, as in the examples) and the same layer weights (every parameter
filled from a generator seeded by its name), and the outputs are compared: values, shapes and
dtypes, Python numbers and bools alike. Where the output is differentiable, the gradients of a
fixed random weighting of it are compared too, for the inputs and every layer parameter.

``python tests/test_public_ops.py`` prints the table and the passing/total count; under pytest
each case is one test, and the last test prints the count.
"""
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyneural as pn  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5


class Lib:
    """One library under PyTorch's names, plus what a case needs to give both the same data."""

    def __init__(self, name, module, nn, functional):
        self.name, self.torch, self.nn, self.F = name, module, nn, functional
        self.modules = []

    def tensor(self, array, requires_grad=False):
        return self.torch.tensor(array, requires_grad=requires_grad)

    def layer(self, module):
        """``module`` with every parameter set from a generator seeded by the parameter's name."""
        for name, param in module.named_parameters():
            values = np.random.default_rng(zlib.crc32(name.encode())).normal(0.0, 0.3, tuple(param.shape))
            with self.torch.no_grad():
                param.copy_(self.tensor(values.astype(np.float32)))
        self.modules.append(module)
        return module


def torch_lib():
    return Lib("torch", torch, torch.nn, torch.nn.functional)


def pyneural_lib():
    import pyneural.nn.functional as F
    return Lib("pyneural", pn, pn.nn, F)


CASES = {}


def case(source, inputs=(), grad=True, rtol=RTOL, atol=ATOL):
    """Register ``fn(L, *tensors)``. ``inputs``: a function of a numpy Generator returning the
    input arrays (float arrays become leaves that require grad when ``grad``)."""
    def register(fn):
        CASES[fn.__name__] = dict(fn=fn, source=source, inputs=inputs, grad=grad, rtol=rtol, atol=atol)
        return fn
    return register


def normal(*shape):
    return lambda rng: rng.normal(size=shape).astype(np.float32)


def ints(high, *shape):
    return lambda rng: rng.integers(0, high, shape).astype(np.int64)


def several(*makers):
    return lambda rng: tuple(m(rng) for m in makers)


def probabilities(*shape):
    return lambda rng: rng.uniform(0.05, 0.95, shape).astype(np.float32)


# ---- pytorch/examples mnist/main.py -------------------------------------------------------------

@case("mnist/main.py Net.forward", several(normal(2, 1, 12, 12)))
def mnist_conv_relu_pool_flatten(L, x):
    conv1 = L.layer(L.nn.Conv2d(1, 4, 3, 1))
    conv2 = L.layer(L.nn.Conv2d(4, 8, 3, 1))
    x = L.F.relu(conv1(x))
    x = L.F.relu(conv2(x))
    x = L.F.max_pool2d(x, 2)
    return L.torch.flatten(x, 1)


@case("mnist/main.py Net.forward (eval: dropout is the identity)", several(normal(3, 16)))
def mnist_linear_dropout_log_softmax(L, x):
    fc1, drop, fc2 = L.layer(L.nn.Linear(16, 8)), L.nn.Dropout(0.5), L.layer(L.nn.Linear(8, 10))
    drop.eval()
    return L.F.log_softmax(fc2(drop(L.F.relu(fc1(x)))), dim=1)


@case("mnist/main.py train: F.nll_loss(output, target)", several(normal(5, 10), ints(10, 5)))
def mnist_nll_loss(L, x, target):
    return L.F.nll_loss(L.F.log_softmax(x, dim=1), target)


@case("mnist/main.py test: nll_loss(..., reduction='sum').item()", several(normal(5, 10), ints(10, 5)), grad=False)
def mnist_nll_loss_sum_item(L, x, target):
    return L.F.nll_loss(L.F.log_softmax(x, dim=1), target, reduction='sum').item()


@case("mnist/main.py test: argmax(dim=1, keepdim=True), eq(view_as), sum().item()",
      several(normal(8, 10), ints(10, 8)), grad=False)
def mnist_correct_count(L, output, target):
    pred = output.argmax(dim=1, keepdim=True)
    return pred, pred.eq(target.view_as(pred)).sum().item()


# ---- pytorch/tutorials cifar10_tutorial.py ------------------------------------------------------

@case("cifar10_tutorial.py Net.forward", several(normal(2, 3, 16, 16)))
def cifar_lenet(L, x):
    conv1, pool, conv2 = L.layer(L.nn.Conv2d(3, 6, 5)), L.nn.MaxPool2d(2, 2), L.layer(L.nn.Conv2d(6, 16, 3))
    fc1 = L.layer(L.nn.Linear(16 * 2 * 2, 12))
    x = pool(L.F.relu(conv1(x)))
    x = pool(L.F.relu(conv2(x)))
    x = x.view(-1, 16 * 2 * 2)
    return L.F.relu(fc1(x))


@case("cifar10_tutorial.py: nn.CrossEntropyLoss()(outputs, labels)", several(normal(4, 10), ints(10, 4)))
def cifar_cross_entropy(L, outputs, labels):
    return L.nn.CrossEntropyLoss()(outputs, labels)


@case("cifar10_tutorial.py: _, predicted = torch.max(outputs, 1)", several(normal(4, 10)))
def cifar_torch_max_dim(L, outputs):
    values, predicted = L.torch.max(outputs, 1)
    return values, predicted


@case("cifar10_tutorial.py: (predicted == labels).sum().item(), labels.size(0)",
      several(ints(3, 12), ints(3, 12)), grad=False)
def cifar_accuracy_count(L, predicted, labels):
    return (predicted == labels).sum().item(), labels.size(0)


@case("cifar10_tutorial.py: classes[label] for label, prediction in zip(labels, predictions)",
      several(ints(4, 6), ints(4, 6)), grad=False)
def cifar_per_class_loop(L, labels, predictions):
    classes = ("plane", "car", "bird", "cat")
    correct = {c: 0 for c in classes}
    for label, prediction in zip(labels, predictions):
        if label == prediction:
            correct[classes[label]] += 1
    return tuple(correct.values())


# ---- pytorch/examples vae/main.py ---------------------------------------------------------------

@case("vae/main.py reparameterize: torch.exp(0.5*logvar), mu + eps*std", several(normal(3, 4), normal(3, 4),
                                                                                  normal(3, 4)))
def vae_reparameterize(L, mu, logvar, eps):
    std = L.torch.exp(0.5 * logvar)
    return mu + eps * std


@case("vae/main.py loss_function: F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')",
      several(probabilities(2, 16), probabilities(2, 1, 4, 4)))
def vae_bce_sum(L, recon_x, x):
    return L.F.binary_cross_entropy(recon_x, x.view(-1, 16), reduction='sum')


@case("vae/main.py loss_function: KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())",
      several(normal(3, 5), normal(3, 5)))
def vae_kld(L, mu, logvar):
    return -0.5 * L.torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


@case("vae/main.py decode: torch.sigmoid(self.fc4(h3))", several(normal(3, 6)))
def vae_sigmoid_linear(L, h):
    return L.torch.sigmoid(L.layer(L.nn.Linear(6, 4))(h))


@case("vae/main.py test: torch.cat([data[:n], recon_batch.view(b, 1, 28, 28)[:n]])",
      several(normal(4, 1, 3, 3), normal(4, 9)))
def vae_cat_comparison(L, data, recon):
    n = min(data.size(0), 2)
    return L.torch.cat([data[:n], recon.view(4, 1, 3, 3)[:n]])


# ---- pytorch/examples dcgan/main.py -------------------------------------------------------------

@case("dcgan/main.py Generator: ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), BatchNorm2d, ReLU(True)",
      several(normal(2, 5, 1, 1)), rtol=1e-4, atol=1e-4)
def dcgan_generator_block(L, z):
    block = L.nn.Sequential(L.nn.ConvTranspose2d(5, 4, 4, 1, 0, bias=False), L.nn.BatchNorm2d(4), L.nn.ReLU(True),
                            L.nn.ConvTranspose2d(4, 3, 4, 2, 1, bias=False), L.nn.Tanh())
    return L.layer(block)(z)


@case("dcgan/main.py Discriminator: Conv2d(nc, ndf, 4, 2, 1, bias=False), LeakyReLU(0.2, inplace=True), Sigmoid",
      several(normal(2, 3, 8, 8)), rtol=1e-4, atol=1e-4)
def dcgan_discriminator_block(L, x):
    block = L.nn.Sequential(L.nn.Conv2d(3, 4, 4, 2, 1, bias=False), L.nn.LeakyReLU(0.2, inplace=True),
                            L.nn.Conv2d(4, 1, 4, 1, 0, bias=False), L.nn.Sigmoid())
    return L.layer(block)(x).view(-1, 1).squeeze(1)


@case("dcgan/main.py: label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype); label.fill_(fake_label)",
      several(normal(3, 2)), grad=False)
def dcgan_full_fill(L, real_cpu):
    label = L.torch.full((real_cpu.size(0),), 1.0, dtype=real_cpu.dtype)
    before = label.clone()
    label.fill_(0.0)
    return before, label


@case("dcgan/main.py: criterion = nn.BCELoss(); errD_real = criterion(output, label)",
      several(probabilities(6), lambda rng: (rng.random(6) > 0.5).astype(np.float32)))
def dcgan_bce_loss(L, output, label):
    return L.nn.BCELoss()(output, label)


@case("dcgan/main.py weights_init: classname.find('BatchNorm') != -1; nn.init.constant_(m.bias.data, 0)",
      grad=False)
def dcgan_weights_init(L):
    net = L.nn.Sequential(L.nn.Conv2d(1, 2, 3), L.nn.BatchNorm2d(2))
    for m in net.modules():
        classname = m.__class__.__name__
        if classname.find('BatchNorm') != -1:
            L.nn.init.constant_(m.weight, 1.0)
            L.nn.init.constant_(m.bias, 0)
    return net[1].weight.detach(), net[1].bias.detach(), [type(m).__name__ for m in net.modules()]


# ---- pytorch/examples imagenet/main.py accuracy() -----------------------------------------------

@case("imagenet/main.py accuracy: output.topk(maxk, 1, True, True); pred.t(); pred.eq(target.view(1, -1)"
      ".expand_as(pred)); correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size)",
      several(normal(6, 8), ints(8, 6)), grad=False)
def imagenet_topk_accuracy(L, output, target):
    maxk, batch_size = 3, target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    res = []
    for k in (1, 3):
        correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        res.append(correct_k.mul_(100.0 / batch_size))
    return pred, res


@case("imagenet/main.py: output.topk values (differentiable)", several(normal(4, 7)))
def imagenet_topk_values(L, output):
    return output.topk(3, 1, True, True)[0]


# ---- pytorch/examples word_language_model -------------------------------------------------------

@case("word_language_model/model.py _generate_square_subsequent_mask: torch.triu(torch.ones(sz, sz)) == 1"
      ").transpose(0, 1), mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, 0.0)",
      grad=False)
def wlm_square_subsequent_mask(L):
    sz = 5
    mask = (L.torch.triu(L.torch.ones(sz, sz)) == 1).transpose(0, 1)
    return mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, float(0.0))


@case("word_language_model/main.py batchify: data.narrow(0, 0, nbatch * bsz); data.view(bsz, -1).t().contiguous()",
      several(ints(50, 23)), grad=False)
def wlm_batchify(L, data):
    bsz = 4
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


@case("word_language_model/main.py get_batch: source[i:i+seq_len], source[i+1:i+1+seq_len].view(-1)",
      several(ints(50, 7, 3)), grad=False)
def wlm_get_batch(L, source):
    i, seq_len = 2, min(3, len(source) - 1 - 2)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)


@case("word_language_model/model.py: self.encoder = nn.Embedding(ntoken, ninp); output.view(-1, ntokens); "
      "F.log_softmax(decoded, dim=1)", several(ints(11, 3, 2)))
def wlm_embedding_decoder(L, tokens):
    encoder, decoder = L.layer(L.nn.Embedding(11, 4)), L.layer(L.nn.Linear(4, 11))
    decoded = decoder(encoder(tokens)).view(-1, 11)
    return L.F.log_softmax(decoded, dim=1)


@case("word_language_model/model.py PositionalEncoding: pe[:, 0::2] = torch.sin(position * div_term), "
      "pe.unsqueeze(0).transpose(0, 1)", grad=False)
def wlm_positional_encoding(L):
    max_len, d_model = 6, 8
    pe = L.torch.zeros(max_len, d_model)
    position = L.torch.arange(0, max_len, dtype=L.torch.float).unsqueeze(1)
    div_term = L.torch.exp(L.torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = L.torch.sin(position * div_term)
    pe[:, 1::2] = L.torch.cos(position * div_term)
    return pe.unsqueeze(0).transpose(0, 1)


@case("word_language_model/main.py: torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)",
      several(normal(4, 6)), grad=False)
def wlm_clip_grad_norm(L, x):
    model = L.layer(L.nn.Linear(6, 3))
    (model(x) ** 2).sum().backward()
    norm = L.torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    return float(norm), model.weight.grad, model.bias.grad


@case("word_language_model/main.py generate: output.squeeze().div(temperature).exp()", several(normal(1, 1, 9)))
def wlm_word_weights(L, output):
    return output.squeeze().div(0.8).exp()


# ---- pytorch/examples fast_neural_style ---------------------------------------------------------

@case("fast_neural_style/utils.py gram_matrix: y.view(b, ch, w * h); features.bmm(features.transpose(1, 2)) / "
      "(ch * h * w)", several(normal(2, 3, 4, 5)))
def style_gram_matrix(L, y):
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    return features.bmm(features_t) / (ch * h * w)


@case("fast_neural_style/utils.py normalize_batch: batch.new_tensor(mean).view(-1, 1, 1); batch.div_(255.0)",
      several(lambda rng: rng.uniform(0, 255, (2, 3, 4, 4)).astype(np.float32)), grad=False)
def style_normalize_batch(L, batch):
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


@case("fast_neural_style/transformer_net.py ConvLayer: ReflectionPad2d(k // 2), Conv2d(..., stride)",
      several(normal(1, 3, 6, 6)), rtol=1e-4, atol=1e-4)
def style_reflection_conv(L, x):
    pad, conv = L.nn.ReflectionPad2d(3 // 2), L.layer(L.nn.Conv2d(3, 4, 3, 2))
    return conv(pad(x))


@case("fast_neural_style/transformer_net.py: torch.nn.InstanceNorm2d(32, affine=True)", several(normal(2, 3, 4, 5)),
      rtol=1e-4, atol=1e-4)
def style_instance_norm(L, x):
    return L.layer(L.nn.InstanceNorm2d(3, affine=True))(x)


@case("fast_neural_style/transformer_net.py UpsampleConvLayer: F.interpolate(x, mode='nearest', scale_factor=2)",
      several(normal(1, 2, 3, 3)))
def style_upsample_nearest(L, x):
    return L.F.interpolate(x, mode='nearest', scale_factor=2)


@case("fast_neural_style/neural_style.py: mse_loss = torch.nn.MSELoss(); content_weight * mse_loss(y, x)",
      several(normal(2, 5), normal(2, 5)))
def style_mse(L, y, x):
    return 1e5 * L.nn.MSELoss()(y, x)


# ---- pytorch/examples super_resolution ----------------------------------------------------------

@case("super_resolution/model.py: self.pixel_shuffle = nn.PixelShuffle(upscale_factor)", several(normal(2, 8, 3, 2)))
def sr_pixel_shuffle(L, x):
    return L.nn.PixelShuffle(2)(x)


@case("super_resolution/main.py test: psnr = 10 * log10(1 / mse.item())", several(normal(2, 4), normal(2, 4)),
      grad=False)
def sr_psnr(L, prediction, target):
    mse = L.nn.MSELoss()(prediction, target)
    return 10 * math.log10(1 / mse.item())


# ---- pytorch/examples mnist_forward_forward -----------------------------------------------------

@case("mnist_forward_forward/main.py Layer.forward: x / (x.norm(2, 1, keepdim=True) + 1e-4)", several(normal(4, 6)))
def ff_normalize(L, x):
    return x / (x.norm(2, 1, keepdim=True) + 1e-4)


@case("mnist_forward_forward/main.py: x.pow(2).mean(1); torch.log(1 + torch.exp(torch.cat([-g_pos + t, g_neg - t])))"
      ".mean()", several(normal(5, 4), normal(5, 4)))
def ff_loss(L, pos, neg):
    g_pos, g_neg, threshold = pos.pow(2).mean(1), neg.pow(2).mean(1), 2.0
    return L.torch.log(1 + L.torch.exp(L.torch.cat([-g_pos + threshold, g_neg - threshold]))).mean()


@case("mnist_forward_forward/main.py overlay_y_on_x: x_ = x.clone(); x_[:, :10] *= 0.0; "
      "x_[range(x.shape[0]), y] = x.max()", several(normal(4, 12), ints(10, 4)), grad=False)
def ff_overlay(L, x, y):
    x_ = x.clone()
    x_[:, :10] *= 0.0
    x_[range(x.shape[0]), y] = x.max()
    return x_


# ---- pytorch/examples siamese_network -----------------------------------------------------------

@case("siamese_network/main.py: torch.cat((output1, output2), 1); nn.Sigmoid(); nn.BCELoss()",
      several(normal(3, 4), normal(3, 4), lambda rng: (rng.random((3, 1)) > 0.5).astype(np.float32)))
def siamese_head(L, output1, output2, targets):
    fc, sigmoid = L.layer(L.nn.Linear(8, 1)), L.nn.Sigmoid()
    return L.nn.BCELoss()(sigmoid(fc(L.torch.cat((output1, output2), 1))), targets)


@case("siamese_network/main.py test: pred = torch.where(output > 0.5, 1, 0); pred.eq(targets.view_as(pred))",
      several(probabilities(6, 1), ints(2, 6)), grad=False)
def siamese_where_scalars(L, output, targets):
    pred = L.torch.where(output > 0.5, 1, 0)
    return pred, pred.eq(targets.view_as(pred)).sum().item()


# ---- pytorch/examples reinforcement_learning ----------------------------------------------------

@case("reinforcement_learning/reinforce.py select_action: torch.from_numpy(state).float().unsqueeze(0); "
      "F.softmax(action_scores, dim=1)", grad=False)
def rl_from_numpy_softmax(L):
    state = np.array([0.1, -0.2, 0.3, 0.05])
    x = L.torch.from_numpy(state).float().unsqueeze(0)
    return L.F.softmax(L.layer(L.nn.Linear(4, 2))(x), dim=1)


@case("reinforcement_learning/reinforce.py finish_episode: returns = torch.tensor(returns); "
      "(returns - returns.mean()) / (returns.std() + eps)", grad=False)
def rl_normalised_returns(L):
    returns = L.torch.tensor([1.0, 0.99, 1.9701, 2.940399])
    eps = np.finfo(np.float32).eps.item()
    return (returns - returns.mean()) / (returns.std() + eps)


@case("reinforcement_learning/reinforce.py: torch.cat(policy_loss).sum(); actor_critic: torch.stack(losses).sum()",
      several(normal(1), normal(1), normal(1)))
def rl_cat_stack_sum(L, a, b, c):
    return L.torch.cat([a, b, c]).sum(), L.torch.stack([a, b, c]).sum()


@case("reinforcement_learning/actor_critic.py: F.smooth_l1_loss(value, torch.tensor([R]))", several(normal(1)))
def rl_smooth_l1(L, value):
    return L.F.smooth_l1_loss(value, L.torch.tensor([0.3]))


# ---- pytorch/tutorials "Learning PyTorch with Examples" -----------------------------------------

@case("polynomial_nn.py: torch.linspace(-math.pi, math.pi, 2000); x.unsqueeze(-1).pow(p)", grad=False)
def lpwe_linspace_pow(L):
    x = L.torch.linspace(-math.pi, math.pi, 20)
    p = L.torch.tensor([1, 2, 3])
    return x.unsqueeze(-1).pow(p)


@case("polynomial_nn.py: nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1)); nn.MSELoss(reduction='sum')",
      several(normal(10, 3), normal(10)))
def lpwe_sequential_flatten_mse(L, xx, y):
    model = L.layer(L.nn.Sequential(L.nn.Linear(3, 1), L.nn.Flatten(0, 1)))
    return L.nn.MSELoss(reduction='sum')(model(xx), y)


@case("polynomial_tensor.py: loss = (y_pred - y).pow(2).sum(); a + b * x + c * x ** 2 + d * x ** 3",
      several(normal(8), normal(8), normal(1), normal(1)))
def lpwe_polynomial_tensor(L, x, y, a, b):
    y_pred = a + b * x + a * x ** 2 + b * x ** 3
    return (y_pred - y).pow(2).sum()


@case("polynomial_autograd.py: with torch.no_grad(): a -= learning_rate * a.grad; a.grad = None", grad=False)
def lpwe_manual_update(L):
    a = L.torch.tensor([0.5], requires_grad=True)
    (a * 3.0).sum().backward()
    with L.torch.no_grad():
        a -= 1e-2 * a.grad
        a.grad = None
    return a.detach(), a.grad is None, a.requires_grad


@case("polynomial_nn.py: linear_layer = model[0]; linear_layer.weight[:, 0].item()", grad=False)
def lpwe_sequential_index_item(L):
    model = L.layer(L.nn.Sequential(L.nn.Linear(3, 1), L.nn.Flatten(0, 1)))
    linear_layer = model[0]
    return linear_layer.bias.item(), linear_layer.weight[:, 0].item(), linear_layer.weight[:, 2].item()


# ---- pytorch/examples vision_transformer, and the transformer tutorials -------------------------

@case("vision_transformer/main.py: x.unfold(2, p, p).unfold(3, p, p) into patches", several(normal(2, 3, 4, 6)))
def vit_unfold_patches(L, x):
    p = 2
    patches = x.unfold(2, p, p).unfold(3, p, p)
    return patches.contiguous().view(2, 3, -1, p * p).permute(0, 2, 1, 3).reshape(2, -1, 3 * p * p)


@case("vision_transformer/main.py: torch.cat((cls_token.expand(b, -1, -1), x), dim=1) + pos_embedding",
      several(normal(1, 1, 4), normal(3, 5, 4), normal(1, 6, 4)))
def vit_cls_token(L, cls_token, x, pos):
    return L.torch.cat((cls_token.expand(3, -1, -1), x), dim=1) + pos


@case("vision_transformer/main.py attention: (q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v",
      several(normal(2, 3, 4, 5), normal(2, 3, 4, 5), normal(2, 3, 4, 5)))
def vit_attention(L, q, k, v):
    attn = (q @ k.transpose(-2, -1)) * (5 ** -0.5)
    return attn.softmax(dim=-1) @ v


@case("vision_transformer/main.py: x.permute(0, 2, 1, 3).reshape(b, n, -1); nn.LayerNorm(dim); nn.GELU()",
      several(normal(2, 3, 4, 5)), rtol=1e-4, atol=1e-4)
def vit_merge_heads_norm_gelu(L, x):
    merged = x.permute(0, 2, 1, 3).reshape(2, 4, -1)
    return L.nn.GELU()(L.layer(L.nn.LayerNorm(15))(merged))


@case("transformer tutorials: x.masked_fill(mask == 0, float('-inf')); F.softmax(scores, dim=-1)",
      several(normal(2, 4, 4)))
def transformer_masked_softmax(L, scores):
    mask = L.torch.tril(L.torch.ones(4, 4))
    return L.F.softmax(scores.masked_fill(mask == 0, float('-inf')), dim=-1)


# ---- tensor habits that run through every example -----------------------------------------------

@case("tensor creation: torch.zeros, ones_like, arange(0, 10, 2), eye, tensor(dtype=torch.float32), full",
      grad=False)
def creation(L):
    t = L.torch
    x = t.tensor([[1, 2], [3, 4]], dtype=t.float32)
    return (t.zeros(2, 3), t.ones_like(x), t.arange(0, 10, 2), t.eye(3), x, t.full((2, 2), 7.0),
            t.zeros((2, 2), dtype=t.long), t.arange(5).float())


@case("indexing: x[:, 0], x[..., 1:], x[idx], x[mask], x[None], x[-1]", several(normal(4, 5)))
def indexing(L, x):
    idx = L.torch.tensor([2, 0])
    return x[:, 0], x[..., 1:], x[idx], x[x > 0.5], x[None], x[-1]


@case("view/reshape/permute/contiguous/transpose/squeeze/unsqueeze", several(normal(2, 3, 4)))
def shape_ops(L, x):
    return (x.view(6, 4), x.reshape(-1), x.permute(2, 0, 1).contiguous(), x.transpose(0, 1), x.unsqueeze(1),
            x[:, :1].squeeze(1), x.flatten(1), x.view(2, -1).size(), x.shape[1:], x.dim(), x.numel(), len(x))


@case("reductions with dim/keepdim: sum(dim=1, keepdim=True), mean((1, 2)), max(dim=1)[0], min, std(dim=0), var",
      several(normal(3, 4, 5)))
def reductions(L, x):
    return (x.sum(dim=1, keepdim=True), x.mean((1, 2)), x.max(dim=1)[0], x.min(2).values, x.std(dim=0), x.var(),
            x.sum(), x.mean(-1, keepdim=True), x.prod(dim=0))


@case("argmax/argmin, eq, sum, item: output.argmax(1) == target", several(normal(6, 4), ints(4, 6)), grad=False)
def argmax_eq_sum_item(L, output, target):
    pred = output.argmax(1)
    return pred, output.argmin(dim=1), (pred == target).sum().item(), (pred == target).float().mean().item()


@case("torch.topk(x, k, dim) and its .values/.indices", several(normal(3, 6)))
def topk_named(L, x):
    top = L.torch.topk(x, k=2, dim=1)
    return top.values, top.indices


@case("torch.sort(x, descending=True), torch.argsort", several(normal(2, 5)))
def sort_descending(L, x):
    values, indices = L.torch.sort(x, descending=True)
    return values, indices, L.torch.argsort(x, dim=1)


@case("cat / stack with dim", several(normal(2, 3), normal(2, 3)))
def cat_stack(L, a, b):
    return L.torch.cat([a, b], dim=1), L.torch.stack([a, b], dim=0), L.torch.stack((a, b), dim=-1)


@case("masked_fill with a bool mask and a float", several(normal(3, 4)))
def masked_fill(L, x):
    return x.masked_fill(x < 0, 0.0), x.masked_fill(x > 1, -1e9)


@case("softmax / log_softmax along dims 0, 1, -1", several(normal(3, 4, 2)))
def softmax_dims(L, x):
    return (L.F.softmax(x, dim=0), L.F.log_softmax(x, dim=1), x.softmax(-1), L.torch.log_softmax(x, dim=-1))


@case("F.* with keyword arguments: leaky_relu(negative_slope=), dropout(training=False), pad(mode='constant', value=)",
      several(normal(1, 2, 3, 3)))
def functional_keywords(L, x):
    return (L.F.leaky_relu(x, negative_slope=0.1), L.F.dropout(x, p=0.3, training=False),
            L.F.pad(x, (1, 2, 0, 1), mode='constant', value=0.5), L.F.elu(x, alpha=0.5),
            L.F.avg_pool2d(x, kernel_size=2, stride=1, padding=1), L.F.hardtanh(x, min_val=-0.5, max_val=0.5))


@case("F.cross_entropy(label_smoothing=...)-free forms: weight=, ignore_index=, reduction='none'",
      several(normal(5, 4), ints(4, 5)))
def cross_entropy_keywords(L, logits, target):
    weight = L.torch.tensor([1.0, 2.0, 0.5, 1.5])
    return (L.F.cross_entropy(logits, target, weight=weight), L.F.cross_entropy(logits, target, ignore_index=1),
            L.F.cross_entropy(logits, target, reduction='none'))


@case("F.binary_cross_entropy_with_logits(pos_weight=), F.l1_loss, F.mse_loss(reduction='sum')",
      several(normal(4, 3), probabilities(4, 3)))
def bce_logits_l1_mse(L, logits, target):
    return (L.F.binary_cross_entropy_with_logits(logits, target, pos_weight=L.torch.tensor([1.0, 2.0, 3.0])),
            L.F.l1_loss(logits, target), L.F.mse_loss(logits, target, reduction='sum'))


@case("nn layers with keyword arguments: Conv2d(padding=, stride=, dilation=, groups=, bias=False)",
      several(normal(2, 4, 7, 7)), rtol=1e-4, atol=1e-4)
def conv2d_keywords(L, x):
    conv = L.layer(L.nn.Conv2d(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2,
                               groups=2, bias=False))
    return conv(x)


@case("nn layers with keyword arguments: MaxPool2d(kernel_size=3, stride=2, padding=1), "
      "AvgPool2d(ceil_mode=True), AdaptiveAvgPool2d((1, 1))", several(normal(2, 3, 7, 7)))
def pooling_keywords(L, x):
    return (L.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)(x), L.nn.AvgPool2d(2, ceil_mode=True)(x),
            L.nn.AdaptiveAvgPool2d((1, 1))(x))


@case("nn.BatchNorm1d / BatchNorm2d in train() then eval(): running statistics", several(normal(6, 3, 2, 2)),
      rtol=1e-4, atol=1e-4)
def batchnorm_train_eval(L, x):
    bn = L.layer(L.nn.BatchNorm2d(3, momentum=0.2))
    bn.train()
    y_train = bn(x)
    bn.eval()
    return y_train, bn(x), bn.running_mean, bn.running_var, bn.training


@case("nn.Embedding(padding_idx=0), nn.Linear(bias=False), nn.Dropout(p=0.1).eval()", several(ints(6, 2, 3)))
def embedding_linear_keywords(L, idx):
    emb = L.layer(L.nn.Embedding(6, 4, padding_idx=0))
    lin = L.layer(L.nn.Linear(4, 2, bias=False))
    drop = L.nn.Dropout(p=0.1).eval()
    return drop(lin(emb(idx)))


@case(".to(device), .detach().cpu().numpy(), .tolist(), .item()", several(normal(2, 3)), grad=False)
def device_numpy_habits(L, x):
    device = L.torch.device("cpu")
    y = (x * 2).to(device)
    return y.detach().cpu().numpy(), y.tolist(), y[0, 0].item(), str(y.device), y.to(L.torch.float64).dtype == \
        L.torch.float64


@case("with torch.no_grad(): results do not require grad; torch.set_grad_enabled(False)", several(normal(3)),
      grad=False)
def no_grad_habits(L, x):
    w = L.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with L.torch.no_grad():
        inside = (x * w).sum()
    with L.torch.set_grad_enabled(False):
        disabled = (x * w).sum()
    outside = (x * w).sum()
    return inside.requires_grad, disabled.requires_grad, outside.requires_grad, inside


@case("model.train() / model.eval() flags through nested modules", grad=False)
def train_eval_flags(L):
    model = L.nn.Sequential(L.nn.Linear(2, 2), L.nn.Sequential(L.nn.Dropout(), L.nn.BatchNorm1d(2)))
    model.eval()
    flags_eval = [m.training for m in model.modules()]
    model.train()
    return flags_eval, [m.training for m in model.modules()]


@case("state_dict round trip: keys, shapes, load_state_dict into a fresh model, same outputs",
      several(normal(3, 4)), grad=False)
def state_dict_round_trip(L, x):
    def make():
        return L.nn.Sequential(L.nn.Linear(4, 5), L.nn.BatchNorm1d(5), L.nn.ReLU(), L.nn.Linear(5, 2))
    model = L.layer(make())
    model(x)  # moves the BatchNorm running statistics
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    state = model.state_dict()
    # .tolist(): pyneural's state_dict values are numpy arrays (copies), torch's are Tensors (README)
    return list(state.keys()), [tuple(v.shape) for v in state.values()], fresh(x), state["1.running_mean"].tolist()


@case("optimizer.zero_grad(set_to_none=True / False)", several(normal(2, 3)), grad=False)
def zero_grad_set_to_none(L, x):
    model = L.layer(L.nn.Linear(3, 1))
    optimizer = L.torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    optimizer.zero_grad(set_to_none=False)
    zeros = model.weight.grad.clone()
    optimizer.zero_grad(set_to_none=True)
    return zeros, model.weight.grad is None


@case("optimizer step with momentum and param groups; optimizer.state_dict()['param_groups'] lr values",
      several(normal(4, 3)), grad=False)
def sgd_param_groups(L, x):
    model = L.layer(L.nn.Sequential(L.nn.Linear(3, 3), L.nn.Linear(3, 1)))
    optimizer = L.torch.optim.SGD([{'params': model[0].parameters(), 'lr': 1e-2}, {'params': model[1].parameters()}],
                                  lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()
    return model[0].weight.detach(), model[1].weight.detach(), [g['lr'] for g in optimizer.state_dict()['param_groups']]


@case("Adam(weight_decay=) and StepLR(step_size, gamma): get_last_lr()", several(normal(4, 3)), grad=False,
      rtol=1e-4, atol=1e-5)
def adam_steplr(L, x):
    model = L.layer(L.nn.Linear(3, 2))
    optimizer = L.torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    scheduler = L.torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()
        scheduler.step()
    return model.weight.detach(), scheduler.get_last_lr()


@case("arithmetic with Python numbers and broadcasting: 1 - x, 2 ** x, x / 3, x // 2 (ints), x % 3",
      several(normal(3, 4), ints(10, 3, 4)))
def scalar_arithmetic(L, x, n):
    return 1 - x, 2 ** x, x / 3, n // 2, n % 3, -x, x * n, (n / 4).dtype == L.torch.float32


@case("elementwise math: abs, sqrt, exp, log, clamp(min=, max=), sin/cos, tanh, sigmoid, x.clamp_(0, 1)",
      several(probabilities(3, 3)))
def elementwise_math(L, x):
    return (x.abs(), x.sqrt(), x.exp(), x.log(), x.clamp(min=0.2, max=0.7), L.torch.sin(x), L.torch.cos(x),
            L.torch.tanh(x), L.torch.sigmoid(x), L.torch.clamp(x, 0.3))


@case("x.float(), x.long(), x.double(), x.type_as(y), x.bool(), x.int()", several(normal(2, 3), ints(5, 2, 3)),
      grad=False)
def dtype_conversions(L, x, n):
    return x.long(), n.float(), x.double(), n.type_as(x), n.bool(), x.int(), n.to(L.torch.float32)


@case("matmul forms: x @ w, torch.mm, torch.bmm, torch.matmul(1-D, 1-D), x.mv(v)",
      several(normal(3, 4), normal(4, 2), normal(2, 3, 4), normal(4)))
def matmul_forms(L, x, w, b, v):
    return x @ w, L.torch.mm(x, w), L.torch.bmm(b, b.transpose(1, 2)), L.torch.matmul(v, v), x.mv(v)


@case("gather / scatter_ / index_select as in label smoothing and one-hot code", several(normal(4, 5), ints(5, 4)))
def gather_scatter(L, logits, target):
    picked = logits.gather(1, target.unsqueeze(1))
    one_hot = L.torch.zeros(4, 5).scatter_(1, target.unsqueeze(1), 1.0)
    return picked, one_hot, logits.index_select(0, L.torch.tensor([3, 1]))


@case("F.one_hot(target, num_classes).float()", several(ints(5, 6)), grad=False)
def one_hot(L, target):
    return L.F.one_hot(target, num_classes=5).float(), L.F.one_hot(target)


@case("split / chunk / repeat / expand / flip", several(normal(4, 6)))
def split_chunk_repeat(L, x):
    a, b = x.chunk(2, dim=1)
    parts = x.split([1, 3], dim=0)
    return a, b, parts[1], x[:1].repeat(2, 1), x[:, :1].expand(4, 3), x.flip(0)


@case("torch.manual_seed(s); torch.randperm(n).size(); torch.randn(2, 3).shape", grad=False)
def random_shapes(L):
    L.torch.manual_seed(0)
    return L.torch.randperm(7).size(), tuple(L.torch.randn(2, 3).shape), L.torch.rand(4).dtype == L.torch.float32, \
        sorted(L.torch.randperm(5).tolist())


# ---- running a case -----------------------------------------------------------------------------

def _leaves(out):
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _leaves(item)]
    if isinstance(out, dict):
        return [leaf for item in out.values() for leaf in _leaves(item)]
    return [out]


def _value(leaf, lib):
    """A comparable numpy array (with a dtype name) or Python value for one output leaf."""
    if isinstance(leaf, lib.torch.Tensor):
        return "tensor", np.array(leaf.detach().cpu().numpy()), str(leaf.dtype).replace("torch.", "")
    if isinstance(leaf, np.ndarray):
        return "ndarray", leaf, str(leaf.dtype)
    if type(leaf).__name__ == "Size":  # torch.Size; pyneural's sizes are plain tuples
        return "tuple", tuple(leaf), ""
    return type(leaf).__name__, leaf, ""


def run_case(name, lib):
    spec = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    arrays = spec["inputs"](rng) if spec["inputs"] else ()
    inputs = [lib.tensor(a, requires_grad=spec["grad"] and a.dtype.kind == "f") for a in arrays]
    out = spec["fn"](lib, *inputs)
    leaves = _leaves(out)
    values = [_value(leaf, lib) for leaf in leaves]
    grads = []
    if spec["grad"]:
        weight_rng = np.random.default_rng(1)
        loss = None
        for leaf in leaves:
            if isinstance(leaf, lib.torch.Tensor) and leaf.requires_grad:
                w = lib.tensor(weight_rng.normal(size=tuple(leaf.shape)).astype(np.float32))
                loss = (leaf * w).sum() if loss is None else loss + (leaf * w).sum()
        assert loss is not None, f"{name}: nothing differentiable came out on {lib.name}"
        loss.backward()
        params = [p for m in lib.modules for p in m.parameters()]
        grads = [None if t.grad is None else np.array(t.grad.numpy()) for t in [*inputs, *params]
                 if t.requires_grad]
    return values, grads


def compare(name):
    """None when pyneural agrees with torch on case ``name``, else what differs."""
    spec = CASES[name]
    expected, expected_grads = run_case(name, torch_lib())
    got, got_grads = run_case(name, pyneural_lib())
    if len(expected) != len(got):
        return f"{len(got)} outputs, torch has {len(expected)}"
    for i, ((kind_t, want, dtype_t), (kind_p, have, dtype_p)) in enumerate(zip(expected, got)):
        if kind_t == "tensor":
            if kind_p != "tensor":
                return f"output {i}: a {kind_p}, torch gives a Tensor"
            if dtype_t != dtype_p:
                return f"output {i}: dtype {dtype_p}, torch {dtype_t}"
            if want.shape != have.shape:
                return f"output {i}: shape {have.shape}, torch {want.shape}"
            if not np.allclose(have, want, rtol=spec["rtol"], atol=spec["atol"], equal_nan=True):
                return f"output {i}: values differ by up to {np.nanmax(np.abs(have - want))}"
        elif kind_t != kind_p:
            return f"output {i}: a {kind_p} ({have!r}), torch gives a {kind_t} ({want!r})"
        elif isinstance(want, float):
            if not math.isclose(have, want, rel_tol=spec["rtol"], abs_tol=spec["atol"]):
                return f"output {i}: {have!r}, torch {want!r}"
        elif kind_t == "ndarray":
            if want.dtype != have.dtype or want.shape != have.shape or not np.allclose(have, want, spec["rtol"],
                                                                                       spec["atol"]):
                return f"output {i}: array {have!r}, torch {want!r}"
        elif want != have:
            return f"output {i}: {have!r}, torch {want!r}"
    if len(expected_grads) != len(got_grads):
        return f"{len(got_grads)} gradients, torch has {len(expected_grads)}"
    for i, (want, have) in enumerate(zip(expected_grads, got_grads)):
        if (want is None) != (have is None):
            return f"gradient {i}: {'None' if have is None else 'present'}, torch {'None' if want is None else 'present'}"
        if want is not None and (want.shape != have.shape or not np.allclose(have, want, rtol=spec["rtol"],
                                                                              atol=spec["atol"])):
            return f"gradient {i}: differs (shape {have.shape} vs {want.shape})"
    return None


RESULTS = {}


@pytest.mark.parametrize("name", list(CASES))
def test_public_op(name):
    try:
        problem = compare(name)
    except Exception as e:  # a missing name or a refused call is a disagreement too
        problem = f"{type(e).__name__}: {e}"
    RESULTS[name] = problem
    assert problem is None, f"{name} ({CASES[name]['source']}): {problem}"


def test_count_printed(capsys):
    """Prints ``public PyTorch example ops: passing/total`` for the cases run in this session."""
    assert RESULTS, "run together with the cases"
    passing = sum(problem is None for problem in RESULTS.values())
    with capsys.disabled():
        print(f"\npublic PyTorch example ops: {passing}/{len(RESULTS)} agree with PyTorch "
              f"(of {len(CASES)} cases in the table)")


def test_table_is_large_enough():
    assert len(CASES) >= 60


if __name__ == "__main__":
    passing = 0
    for case_name in CASES:
        try:
            result = compare(case_name)
        except Exception as e:  # noqa: BLE001
            result = f"{type(e).__name__}: {e}"
        passing += result is None
        print(f"{'ok  ' if result is None else 'FAIL'} {case_name:34s} {CASES[case_name]['source'][:70]}"
              + ("" if result is None else f"\n       {result}"))
    print(f"public PyTorch example ops: {passing}/{len(CASES)} agree with PyTorch")
