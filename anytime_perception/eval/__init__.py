"""Evaluation of exported models on datasets: accuracy/mAP against MACs per stage."""
