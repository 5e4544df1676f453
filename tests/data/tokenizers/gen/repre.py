import sys
sys.path.insert(0, '/tmp/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py')
from gguf import GGUFReader, GGUFWriter, GGUFValueType
src, dst, pre = sys.argv[1], sys.argv[2], sys.argv[3]
r = GGUFReader(src)
arch = r.fields['general.architecture'].contents()
w = GGUFWriter(dst, arch)
for k, f in r.fields.items():
    if k.startswith('GGUF.') or k == 'general.architecture': continue
    if k == 'tokenizer.ggml.pre':
        continue
    t = f.types[0]
    v = f.contents()
    if t == GGUFValueType.ARRAY:
        w.add_key_value(k, v, t, sub_type=f.types[1])
    else:
        w.add_key_value(k, v, t)
w.add_key_value('tokenizer.ggml.pre', pre, GGUFValueType.STRING)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
