"""The main-job demo: handwritten digits from image folders to a served prediction."""
