# A matrix-factorisation recommender trained on MovieLens ratings, written the way the common
# PyTorch MovieLens examples write it (there is no single upstream file; this follows the usual
# shape: a Dataset of (user, item, rating), random_split into train/validation, a MatrixFactorization
# module of user and item nn.Embedding factors and biases whose forward is a dot product, MSELoss,
# Adam with weight decay, RMSE per epoch, top-k recommendations from the factor matrices).
# Changed from the PyTorch version: the three pyneural import lines. Nothing else.
# Data: a MovieLens ratings.csv (ml-latest-small: userId,movieId,rating,timestamp).
#     python movielens_mf.py --ratings ml-latest-small/ratings.csv --epochs 10
import argparse
import csv
import math

import pyneural as torch
from pyneural import nn
from pyneural.utils.data import DataLoader, Dataset


class RatingsDataset(Dataset):
    def __init__(self, users, items, ratings):
        self.users = torch.tensor(users, dtype=torch.long)
        self.items = torch.tensor(items, dtype=torch.long)
        self.ratings = torch.tensor(ratings, dtype=torch.float32)

    def __len__(self):
        return len(self.ratings)

    def __getitem__(self, idx):
        return self.users[idx], self.items[idx], self.ratings[idx]


class MatrixFactorization(nn.Module):
    def __init__(self, n_users, n_items, n_factors=20):
        super().__init__()
        self.user_factors = nn.Embedding(n_users, n_factors)
        self.item_factors = nn.Embedding(n_items, n_factors)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user_factors.weight, std=0.1)
        nn.init.normal_(self.item_factors.weight, std=0.1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.global_bias = nn.Parameter(torch.zeros(1))

    def forward(self, user, item):
        dot = (self.user_factors(user) * self.item_factors(item)).sum(dim=1)
        return dot + self.user_bias(user).squeeze(1) + self.item_bias(item).squeeze(1) + self.global_bias


def load_ratings(path):
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    user_ids = sorted({int(r['userId']) for r in rows})
    item_ids = sorted({int(r['movieId']) for r in rows})
    user2idx = {u: i for i, u in enumerate(user_ids)}
    item2idx = {m: i for i, m in enumerate(item_ids)}
    users = [user2idx[int(r['userId'])] for r in rows]
    items = [item2idx[int(r['movieId'])] for r in rows]
    ratings = [float(r['rating']) for r in rows]
    return RatingsDataset(users, items, ratings), item_ids


def evaluate(model, loader):
    model.eval()
    squared_error, count = 0.0, 0
    with torch.no_grad():
        for user, item, rating in loader:
            pred = model(user, item).clamp(0.5, 5.0)
            squared_error += ((pred - rating) ** 2).sum().item()
            count += rating.numel()
    return math.sqrt(squared_error / count)


def main():
    parser = argparse.ArgumentParser(description='Matrix factorisation on MovieLens ratings')
    parser.add_argument('--ratings', required=True, help='path to ratings.csv')
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--factors', type=int, default=32)
    parser.add_argument('--lr', type=float, default=1e-2)
    parser.add_argument('--weight-decay', type=float, default=1e-5)
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument('--top-k', type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dataset, item_ids = load_ratings(args.ratings)
    n_users = int(dataset.users.max()) + 1
    n_items = int(dataset.items.max()) + 1
    train_set, val_set = torch.utils.data.random_split(
        dataset, [0.9, 0.1], generator=torch.Generator().manual_seed(args.seed))
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)
    print(f'{len(dataset)} ratings from {n_users} users on {n_items} items '
          f'({len(train_set)} train, {len(val_set)} validation)')

    model = MatrixFactorization(n_users, n_items, args.factors)
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    for epoch in range(1, args.epochs + 1):
        model.train()
        total_loss = 0.0
        for user, item, rating in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(user, item), rating)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(rating)
        train_rmse = math.sqrt(total_loss / len(train_set))
        print(f'Epoch {epoch}: train RMSE {train_rmse:.4f}  validation RMSE {evaluate(model, val_loader):.4f}')

    with torch.no_grad():
        scores = model.user_factors.weight @ model.item_factors.weight.T + model.item_bias.weight.T
        top = torch.topk(scores[0], k=args.top_k)
    print(f'Top {args.top_k} items for user 0: {[item_ids[i] for i in top.indices.tolist()]}')
    torch.save(model.state_dict(), 'mf.pt')


if __name__ == '__main__':
    main()
