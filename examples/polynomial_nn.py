# Ported from the PyTorch tutorial "Learning PyTorch with Examples", section "PyTorch: nn"
# (pytorch/tutorials, beginner_source/examples_nn/polynomial_nn.py): fit y = sin(x) on [-pi, pi]
# with a third-order polynomial, as nn.Sequential(Linear(3, 1), Flatten(0, 1)) on the features
# (x, x^2, x^3), MSELoss(reduction='sum') and a hand-written gradient step under no_grad.
# Changed: the import line (torch -> pyneural). The tutorial's long comments are shortened.
import pyneural as torch
import math

# Inputs and outputs.
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)

# The features (x, x^2, x^3): x.unsqueeze(-1) has shape (2000, 1) and p (3,), so broadcasting gives (2000, 3).
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)

# A linear layer, then a Flatten to match the shape of y.
model = torch.nn.Sequential(
    torch.nn.Linear(3, 1),
    torch.nn.Flatten(0, 1)
)
loss_fn = torch.nn.MSELoss(reduction='sum')

learning_rate = 1e-6
for t in range(2000):
    y_pred = model(xx)

    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    model.zero_grad()
    loss.backward()

    # Gradient descent: each parameter is a Tensor with its gradient beside it.
    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad

# The first layer of the Sequential, indexed like a list.
linear_layer = model[0]

print(f'Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x + {linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3')
