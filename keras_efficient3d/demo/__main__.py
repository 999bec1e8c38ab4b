import keras_efficient3d.demo
from keras_efficient3d import cli
from keras_efficient3d.demo import define_flags, main

__doc__ = keras_efficient3d.demo.__doc__  # what --help prints

if __name__ == "__main__":
    cli.run(main, define_flags)
