"""A matplotlib figure (Agg): artists, title, and the pixels it renders."""

SETUP = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt, hashlib
s12_fig, s12_ax = plt.subplots(figsize=(3, 2), dpi=50)
s12_ax.plot([0, 1, 2], [0, 1, 4]); s12_ax.set_title("before")
def s12_pixels():
    s12_fig.canvas.draw()
    return hashlib.sha1(bytes(s12_fig.canvas.buffer_rgba())).hexdigest()
"""
FINGERPRINT = "(len(s12_ax.lines), s12_ax.get_title(), s12_pixels())"
MUTATE = "s12_ax.plot([0, 2], [4, 0]); s12_ax.set_title('after')"
