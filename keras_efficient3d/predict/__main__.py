import keras_efficient3d.predict
from keras_efficient3d import cli
from keras_efficient3d.predict.command import define_flags, main

__doc__ = keras_efficient3d.predict.__doc__  # what --help prints

if __name__ == "__main__":
    cli.run(main, define_flags, positional=True)
