set -x
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
python3 -c "import jax,jaxlib,flax,optax,orbax.checkpoint,torch,sys; print(sys.version); print('jax',jax.__version__,'flax',flax.__version__,'optax',optax.__version__,'torch',torch.__version__, jax.devices())" 2>&1 | tee $OUT/env.txt
python3 -m pip list 2>/dev/null | grep -i -E "jax|flax|optax|orbax|chex|tensor|onnx|ml.coll|numpy|absl|etils|torch" >> $OUT/env.txt
( time timeout 100 python3 -m launch.train --config configs/default.py --workdir /tmp/run ) > $OUT/main_job.log 2>&1; echo rc=$?
tail -20 $OUT/main_job.log
cp /tmp/run/summary.json $OUT/ 2>/dev/null
timeout 40 python3 -m hybrenet_jax export --workdir /tmp/run --format onnx --out /tmp/hrn.onnx --verify 2>&1 | tail -8
timeout 80 python3 -m bench.throughput --device gpu --networks resnet18 --batch 128 --steps 10 --rounds 2 --no-torch-compile --no-scaling --no-plain-xla --pipeline-images 5000 --report $OUT/throughput.json 2>&1 | tail -40
echo done
