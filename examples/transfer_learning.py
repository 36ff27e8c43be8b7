# Fine-tuning a pretrained network, in the style of the PyTorch tutorials "Transfer Learning for
# Computer Vision" (beginner_source/transfer_learning_tutorial.py: its train_model with train/val
# phases under set_grad_enabled, StepLR, the best weights kept in a temporary file, the frozen
# "fixed feature extractor" with a replaced fc) and "Saving and Loading a General Checkpoint"
# (recipes_source/recipes/saving_and_loading_a_general_checkpoint.py: epoch, model and optimizer
# state_dicts and the loss in one torch.save, then a resumed run).
# The tutorial's ImageNet ResNet-18 and hymenoptera images need downloads, so a small CNN is
# pretrained here first on synthetic images (which quadrant is bright: 4 classes) and then
# transferred to a second task (top or bottom half: 2 classes). Added to the tutorial's loop:
# parameter groups with their own learning rates and gradient clipping in the full fine-tune.
# Changed from the PyTorch version: the four pyneural import lines. Nothing else.
#     python transfer_learning.py --epochs 3
import argparse
import os
import time
from tempfile import TemporaryDirectory

import pyneural as torch
import pyneural.nn as nn
import pyneural.optim as optim
from pyneural.optim import lr_scheduler


class SmallNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.fc = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def quadrant_images(n, size=16):
    """Noise images with one bright quadrant; the label is the quadrant (0..3, row-major)."""
    labels = torch.randint(0, 4, (n,))
    images = torch.randn(n, 3, size, size)
    rows = (torch.arange(size) // (size // 2)).view(1, size, 1)
    cols = (torch.arange(size) // (size // 2)).view(1, 1, size)
    bright = (rows * 2 + cols) == labels.view(-1, 1, 1)
    images += bright.unsqueeze(1).float() * 0.5
    return images, labels


def make_loaders(images, labels, batch_size):
    n_train = int(0.8 * len(labels))
    datasets = {'train': torch.utils.data.TensorDataset(images[:n_train], labels[:n_train]),
                'val': torch.utils.data.TensorDataset(images[n_train:], labels[n_train:])}
    dataloaders = {x: torch.utils.data.DataLoader(datasets[x], batch_size=batch_size, shuffle=(x == 'train'))
                   for x in ['train', 'val']}
    dataset_sizes = {x: len(datasets[x]) for x in ['train', 'val']}
    return dataloaders, dataset_sizes


def train_model(model, criterion, optimizer, scheduler, dataloaders, dataset_sizes, device, num_epochs,
                clip=None):
    since = time.time()

    with TemporaryDirectory() as tempdir:
        best_model_params_path = os.path.join(tempdir, 'best_model_params.pt')

        torch.save(model.state_dict(), best_model_params_path)
        best_acc = 0.0

        for epoch in range(num_epochs):
            print(f'Epoch {epoch}/{num_epochs - 1}')
            print('-' * 10)

            for phase in ['train', 'val']:
                if phase == 'train':
                    model.train()
                else:
                    model.eval()

                running_loss = 0.0
                running_corrects = 0

                for inputs, labels in dataloaders[phase]:
                    inputs = inputs.to(device)
                    labels = labels.to(device)

                    optimizer.zero_grad()

                    with torch.set_grad_enabled(phase == 'train'):
                        outputs = model(inputs)
                        _, preds = torch.max(outputs, 1)
                        loss = criterion(outputs, labels)

                        if phase == 'train':
                            loss.backward()
                            if clip is not None:
                                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip)
                            optimizer.step()

                    running_loss += loss.item() * inputs.size(0)
                    running_corrects += torch.sum(preds == labels)
                if phase == 'train':
                    scheduler.step()

                epoch_loss = running_loss / dataset_sizes[phase]
                epoch_acc = running_corrects.double() / dataset_sizes[phase]

                print(f'{phase} Loss: {epoch_loss:.4f} Acc: {epoch_acc:.4f}')

                if phase == 'val' and epoch_acc > best_acc:
                    best_acc = epoch_acc
                    torch.save(model.state_dict(), best_model_params_path)

            print()

        time_elapsed = time.time() - since
        print(f'Training complete in {time_elapsed // 60:.0f}m {time_elapsed % 60:.0f}s')
        print(f'Best val Acc: {best_acc:4f}')

        model.load_state_dict(torch.load(best_model_params_path, weights_only=True))
    return model


def main():
    parser = argparse.ArgumentParser(description='Pretrain, checkpoint, then transfer a small CNN')
    parser.add_argument('--epochs', type=int, default=5)
    parser.add_argument('--samples', type=int, default=1000)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--checkpoint', default='pretrained.pt')
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    criterion = nn.CrossEntropyLoss()
    images, quadrants = quadrant_images(args.samples)

    # 1. Pretrain on the 4-class task and save a general checkpoint.
    print('== pretraining (4 quadrants)')
    dataloaders, dataset_sizes = make_loaders(images, quadrants, args.batch_size)
    model = SmallNet(num_classes=4).to(device)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    model = train_model(model, criterion, optimizer, scheduler, dataloaders, dataset_sizes, device, args.epochs)
    torch.save({
        'epoch': args.epochs,
        'model_state_dict': model.state_dict(),
        'optimizer_state_dict': optimizer.state_dict(),
        'loss': criterion(model(images[:64].to(device)), quadrants[:64].to(device)).item(),
    }, args.checkpoint)

    # 2. Load the checkpoint into a fresh model and optimizer, as when resuming.
    model = SmallNet(num_classes=4)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    checkpoint = torch.load(args.checkpoint, weights_only=True)
    model.load_state_dict(checkpoint['model_state_dict'])
    optimizer.load_state_dict(checkpoint['optimizer_state_dict'])
    epoch = checkpoint['epoch']
    loss = checkpoint['loss']
    model.eval()
    print(f'== loaded the checkpoint of epoch {epoch} (loss {loss:.4f})')

    # 3. Fixed feature extractor: freeze everything, replace fc for the 2-class task.
    halves = quadrants // 2
    dataloaders, dataset_sizes = make_loaders(images, halves, args.batch_size)
    for param in model.parameters():
        param.requires_grad = False
    num_ftrs = model.fc.in_features
    model.fc = nn.Linear(num_ftrs, 2)
    model = model.to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f'== fixed feature extractor (top/bottom half): {trainable} trainable parameters')
    optimizer_conv = optim.SGD(model.fc.parameters(), lr=0.01, momentum=0.9)
    exp_lr_scheduler = lr_scheduler.StepLR(optimizer_conv, step_size=7, gamma=0.1)
    model = train_model(model, criterion, optimizer_conv, exp_lr_scheduler, dataloaders, dataset_sizes, device,
                        args.epochs)

    # 4. Fine-tune everything: a smaller learning rate for the pretrained features, clipped gradients.
    for param in model.parameters():
        param.requires_grad_(True)
    optimizer_ft = optim.SGD([
        {'params': model.features.parameters(), 'lr': 1e-3},
        {'params': model.fc.parameters()},
    ], lr=1e-2, momentum=0.9)
    print(f'== fine-tuning: learning rates {[group["lr"] for group in optimizer_ft.param_groups]}')
    exp_lr_scheduler = lr_scheduler.StepLR(optimizer_ft, step_size=7, gamma=0.1)
    model = train_model(model, criterion, optimizer_ft, exp_lr_scheduler, dataloaders, dataset_sizes, device,
                        args.epochs, clip=1.0)


if __name__ == '__main__':
    main()
