"""Helpers shared by the Jetson scripts in this folder (copy the folder as a whole).

Python 3.6 compatible, standard library only: the scripts run on JetPack 4.6.x (Python 3.6,
TensorRT 8.2, NVIDIA's TensorFlow wheel) without keras_efficient3d installed.
"""

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

DEFAULT_BATCH_SIZES = (1, 8)

# Exit codes: 0 ok, 1 failure while running, 2 bad arguments or refused request,
# 3 a required runtime (TensorFlow, TF-TRT, TensorRT, trtexec, GPU) is missing.
EXIT_USAGE = 2
EXIT_MISSING = 3


class Missing(Exception):
    """An expected absence (no TensorRT, no GPU...): reported in one line, exit code 3."""


class Refused(Exception):
    """A request that cannot work on this device (INT8 on a TX2...): exit code 2."""


class Failed(Exception):
    """A tool this script runs failed (trtexec): reported in one line, exit code 1."""


def run_main(main):
    """Runs `main()` and turns expected absences, refusals and a failed tool into one-line
    messages."""
    name = os.path.basename(sys.argv[0])
    try:
        code = main()
    except Missing as err:
        sys.stderr.write("{}: {}\n".format(name, err))
        sys.exit(EXIT_MISSING)
    except Refused as err:
        sys.stderr.write("{}: {}\n".format(name, err))
        sys.exit(EXIT_USAGE)
    except Failed as err:
        sys.stderr.write("{}: {}\n".format(name, err))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


def check_saved_model(path):
    """Refuses, before TensorFlow is imported, a --saved-model that is not a SavedModel folder
    (TensorFlow's loader would end in a traceback)."""
    if not os.path.isdir(path):
        raise Refused("--saved-model {} is not a directory.".format(path))
    if not any(os.path.isfile(os.path.join(path, name))
               for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise Refused("--saved-model {} is not a SavedModel: it has no saved_model.pb "
                      "(export one with deployment/export.py --format savedmodel).".format(path))


def quiet_tensorflow():
    """Keeps TensorFlow's C++ start-up lines off the screen (they would bury the scripts'
    one-line messages), and its oneDNN notice (x86 CPUs with AVX-512 VNNI, printed whatever
    the log level): oneDNN's CPU kernels have no use on the Jetson or around TensorRT. Call
    before TensorFlow is imported; a value the user set is kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def load_saved_model(tf, path):
    """``tf.saved_model.load(path)``; a SavedModel this TensorFlow cannot read (written by a
    newer one, with ops or a format JetPack's does not know) is refused in one line."""
    try:
        return tf.saved_model.load(path)
    except Exception as err:  # TensorFlow raises several kinds, none of them a user's bug
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise Refused("--saved-model {}: this TensorFlow ({}) cannot load it ({}); export it "
                      "with deployment/export.py --format savedmodel (a frozen graph JetPack's "
                      "TensorFlow reads).".format(path, tf.__version__, reason)) from None


def check_output_file(path, flag):
    """Refuses, before the long work, a file to write (`flag`) whose folder does not exist
    or that is a folder: the results would be lost at the end."""
    if not path:
        return
    if os.path.isdir(path):
        raise Refused("{} {} is a folder; a file is needed.".format(flag, path))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise Refused("{} {}: folder {} does not exist.".format(flag, path, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Refused("{} {}: folder {} is not writable.".format(flag, path, folder))


def check_workspace_mb(value):
    if value < 1:
        raise Refused("--workspace-mb must be >= 1 (MiB of TensorRT workspace). Received: "
                      "{}".format(value))


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically: beside it, then renamed over it, so that an
    interrupted run leaves the file of the run before whole."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".json", prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def copy_record(source, target, extra=None):
    """Copies an export's record (the JSON saying its clip, normalisation and class names,
    which trt_classify.py reads) from `source` to `target`, atomically, with `extra`'s keys
    added. Returns whether there was one to copy."""
    record = None
    if os.path.isfile(source):
        try:
            with open(source, "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            sys.stderr.write("warning: {} is not readable JSON: not copied to {}\n".format(
                source, target))
    if record is None:
        if os.path.isfile(target):
            # an earlier build's, of another model maybe: its names and normalisation would
            # stand for this one's
            os.remove(target)
            sys.stderr.write("note: removed {}, the record of an earlier build: {} has "
                             "none\n".format(target, source))
        return False
    if isinstance(record, dict) and extra:
        record.update(extra)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    write_json(target, record)
    return True


def parse_batch_sizes(text):
    """The batch sizes of --batch-sizes; None (the flag left out) means DEFAULT_BATCH_SIZES."""
    if text is None:
        return DEFAULT_BATCH_SIZES
    try:
        sizes = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise Refused("--batch-sizes must be positive integers separated by commas, e.g. 1,8. "
                      "Received: {}".format(text))
    return sizes


def fixed_batch_notice(what, batch, batch_sizes, given, runner):
    """The note that `what`, whose batch is fixed at `batch`, runs that batch only, or None
    when its batch is dynamic (None) or no other batch was asked for. `given` is --batch-sizes
    as typed (None when left out: the defaults were not the user's choice); `runner` completes
    the sentence ("the engine runs")."""
    if batch is None or all(b == batch for b in batch_sizes):
        return None
    if given:
        return "note: --batch-sizes {} is ignored: {} has a fixed batch of {}, the only batch {}".format(
            given, what, batch, runner)
    return "note: {} has a fixed batch of {}: {} that batch only".format(what, batch, runner)


def fixed_batch_sizes(what, batch, batch_sizes, given, runner):
    """The batch sizes to run `what` at: `batch_sizes`, or `(batch,)` when its batch is fixed,
    with the note (fixed_batch_notice) printed when that drops a batch asked for."""
    if batch is None:
        return tuple(batch_sizes)
    notice = fixed_batch_notice(what, batch, batch_sizes, given, runner)
    if notice:
        print(notice)
    return (batch,)


def parse_compute_capability(text):
    match = re.match(r"^\s*(\d+)\.(\d+)\s*$", str(text))
    if not match:
        raise Refused("--compute-capability must look like 6.2. Received: {}".format(text))
    return int(match.group(1)), int(match.group(2))


def jetson_model():
    """The board name from the device tree ('NVIDIA Jetson TX2'...), or None."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(path, "rb") as f:
                return f.read().decode("ascii", "ignore").strip("\x00\n ")
        except (IOError, OSError):
            continue
    return None


def compute_capability_from_board():
    """(6, 2) on a Jetson TX2 (and TX2 NX/4GB), known Jetsons otherwise, else None."""
    model = (jetson_model() or "").lower()
    if not model:
        return None
    # Orin and Xavier first: "Jetson Orin Nano" is an Orin (sm_87), not the first Nano (sm_53)
    table = (("orin", (8, 7)), ("xavier", (7, 2)), ("tx2", (6, 2)), ("quill", (6, 2)),
             ("tx1", (5, 3)), ("nano", (5, 3)))
    for key, capability in table:
        if key in model:
            return capability
    return None


TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec",
                  "/opt/tensorrt/bin/trtexec")


def find_trtexec(explicit=None):
    """The trtexec to run: `explicit` (--trtexec: a path, or a name PATH finds), else PATH's,
    else JetPack's; None when there is none. Refuses an --trtexec that is not there or cannot
    be run (the user named one: "no trtexec found" would send them looking elsewhere)."""
    if explicit:
        path = explicit if os.sep in explicit else (shutil.which(explicit) or explicit)
        if not os.path.isfile(path):
            raise Refused("--trtexec {}: no such file{}".format(
                explicit, "" if os.sep in explicit else " (and not on PATH)"))
        if not os.access(path, os.X_OK):
            raise Refused("--trtexec {} is not executable (chmod +x it, or point --trtexec "
                          "at TensorRT's trtexec itself).".format(explicit))
        return path
    found = shutil.which("trtexec")
    if found:
        return found
    for place in TRTEXEC_PLACES:
        if os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    return None


def trtexec_error(output):
    """Why trtexec failed, from its output: its last error line (``[E] ...``). Its last line
    is its closing ``&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec ...``, which
    repeats the command and says nothing of the reason."""
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and not line.lstrip().startswith("&&&&")]
    errors = [line for line in lines if "[E]" in line]
    if errors:
        return errors[-1][errors[-1].index("[E]"):]
    return lines[-1] if lines else "no output"


def compute_capability_from_nvidia_smi():
    tool = shutil.which("nvidia-smi")
    if not tool:
        return None
    try:
        out = subprocess.check_output([tool, "--query-gpu=compute_cap", "--format=csv,noheader"],
                                      stderr=subprocess.DEVNULL, universal_newlines=True)
        return parse_compute_capability(out.strip().splitlines()[0])
    except Exception:  # pylint: disable=broad-except
        return None


def int8_supported(capability):
    """TensorRT's INT8 kernels need DP4A/tensor cores: compute capability 6.1 or >= 7.0.
    The TX2 (6.2), TX1/Nano (5.3) and P100 (6.0) have none: there, quantized means FP16."""
    return capability is not None and (tuple(capability) == (6, 1) or tuple(capability) >= (7, 0))


def check_int8(capability, label):
    """Raises `Refused` when INT8 is asked for on a GPU without INT8 support."""
    if capability is None:
        return
    if not int8_supported(capability):
        board = jetson_model()
        where = " ({})".format(board) if board else ""
        raise Refused(
            "INT8 needs a GPU of compute capability 6.1 or >= 7.0 (Xavier, Orin, Turing and "
            "newer); this one{} is sm_{}{}, where TensorRT has no INT8 kernels ({} refused). "
            "Use FP16: on the Jetson TX2 quantized means FP16.".format(
                where, capability[0], capability[1], label))


def summarize(latencies_s, batch_size):
    """Median latency (ms) and clips/s (the paper's measure: clips per second)."""
    median = statistics.median(latencies_s)
    return {
        "batch_size": batch_size,
        "median_ms": median * 1000.0,
        "min_ms": min(latencies_s) * 1000.0,
        "clips_per_s": batch_size / median if median > 0 else float("inf"),
        "iterations": len(latencies_s),
    }


def print_results(results, title, json_path=None):
    print(title)
    print("{:>6} {:>12} {:>10} {:>10}".format("batch", "median ms", "min ms", "clips/s"))
    for r in results:
        # trtexec's summary may lack a minimum (None): shown as n/a rather than made up
        low = "n/a" if r["min_ms"] is None else "{:.3f}".format(r["min_ms"])
        print("{:>6} {:>12.3f} {:>10} {:>10.1f}".format(
            r["batch_size"], r["median_ms"], low, r["clips_per_s"]))
    if json_path:
        write_json(json_path, {"title": title, "results": results})
        print("wrote {}".format(json_path))


class CudaRuntime(object):
    """The few libcudart calls the benchmark needs."""

    def __init__(self):
        names = [ctypes.util.find_library("cudart"), "libcudart.so", "/usr/local/cuda/lib64/libcudart.so"]
        self.lib = None
        for name in names:
            if not name:
                continue
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise Missing("libcudart not found (CUDA runtime); is this a CUDA machine?")
        count = ctypes.c_int(0)
        if self.lib.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
            raise Missing("no CUDA GPU found.")

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cudaMalloc")
        return ptr

    def free(self, ptr):
        self.lib.cudaFree(ptr)

    def copy_to_device(self, ptr, array):
        self._check(self.lib.cudaMemcpy(ptr, array.ctypes.data_as(ctypes.c_void_p),
                                        ctypes.c_size_t(array.nbytes), 1), "cudaMemcpy")

    def copy_to_host(self, array, ptr):
        self._check(self.lib.cudaMemcpy(array.ctypes.data_as(ctypes.c_void_p), ptr,
                                        ctypes.c_size_t(array.nbytes), 2), "cudaMemcpy")

    def synchronize(self):
        self._check(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise Failed("{} failed with CUDA error {}".format(what, status))


def load_engine(trt, path):
    """The TensorRT engine in file `path` (`trt`: the tensorrt module)."""
    logger = trt.Logger(trt.Logger.WARNING)
    with open(path, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    if engine is None:
        raise Failed("TensorRT {} could not load --engine {} (not an engine, or built by "
                     "another TensorRT version)".format(getattr(trt, "__version__", "?"), path))
    return engine


def engine_io(trt, engine):
    """(v3, names, inputs): whether the engine has TensorRT >= 8.5's tensor API (else 8.2's
    bindings), its input and output names in binding order, and the names of its inputs."""
    v3 = hasattr(engine, "num_io_tensors")
    if v3:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    else:
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        inputs = [n for i, n in enumerate(names) if engine.binding_is_input(i)]
    return v3, names, inputs
