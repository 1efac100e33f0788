"""Train a ReID model: `python train.py [model=intra_inter] [data=synthetic] [key=value ...]` (= `reid-train`)."""

from reid.cli import train_main

if __name__ == "__main__":
    train_main()
