"""Instructions per loop iteration of the renderer's Triton kernels, compiled for an H100 (sm_90) without a GPU.

    python benchmarks/kernel_sass.py

Compiles the forward (the fine pass with colour; the coarse pass: weights only, its own jittered depths), backward and
importance kernels at the training launch (bf16: 32 rays / 2 warps forward, 16 / 2 backward, 32 / 1 importance; C = 32,
hidden 64) with the installed Triton, disassembles them
with the `nvdisasm` that ships with Triton, and prints registers, stack and the instruction count of each loop body
(per warp and iteration: one sample step for the render kernels), and the forms of the atomic instructions in the whole
kernel (`REDG.E.ADD.F32x4`: a vector of 4 fp32 values per thread). A proxy for an instruction-bound kernel's cost;
counts depend on the Triton version.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

os.environ['TRITON_INTERPRET'] = '0' # compile, even on a machine without a GPU
os.environ.setdefault('TRITON_DEFAULT_FP_FUSION', '1')
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from renderdiffusion_nb import render_triton as rt

TOOLS = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
INTS = ('N', 'S', 'R', 'C', 'H', 'n_rays', 'F')


def compile_kernel(fn, args, consts, num_warps):
    "Compile `fn` for sm_90; args: name -> Triton type. Pointers and the size arguments get the divisibility-16 hint the launcher gives C = 32, R = 128."
    sig = dict(args) | {k: 'constexpr' for k in consts}
    attrs = {(i,): [['tt.divisibility', 16]] for i, (k, v) in enumerate(sig.items()) if v.startswith('*') or k in INTS}
    return triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget('cuda', 90, 32), options=dict(num_warps=num_warps, num_stages=1))


def report(name, kernel):
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(kernel.asm['cubin']); f.flush()
        sass = subprocess.run([os.path.join(TOOLS, 'nvdisasm'), '-c', f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([os.path.join(TOOLS, 'cuobjdump'), '-res-usage', f.name], capture_output=True, text=True, check=True).stdout
    lines = sass.splitlines()
    labels = {l.rstrip(':'): i for i, l in enumerate(lines) if l.startswith('.L')}
    instr = [bool(re.match(r'\s+/\*[0-9a-f]+\*/', l)) for l in lines]
    loops = [] # a backward branch closes a loop: count the instructions between its label and it
    for i, l in enumerate(lines):
        m = re.search(r'BRA `\((\.L\w+)\)', l)
        if m and labels.get(m.group(1), i) < i: loops.append(sum(instr[labels[m.group(1)]:i + 1]))
    regs, stack = re.search(r'REG:(\d+)', res).group(1), re.search(r'STACK:(\d+)', res).group(1)
    atomics = collections.Counter(m.group(1) for m in re.finditer(r'\b((?:RED|ATOM)G?\.[\w.]+)', sass)) # their forms: scalar F32 or vector F32x2 / F32x4
    print(f'{name:28s} registers {regs:>3s}  stack {stack:>4s}  instructions {sum(instr):5d}  loop bodies {sorted(loops, reverse=True)[:3]}'
          + (f'  atomics {dict(atomics)}' if atomics else ''))


def main():
    ptr = lambda names, **kw: {n: kw.get(n, '*fp32') for n in names}
    ints = {k: 'i32' for k in ('N', 'S', 'R', 'C', 'H')}
    fwd = ptr(['planes', 'W1', 'b1', 'W2', 'b2', 'rays_o', 'rays_d', 't_ptr', 'u_ptr', 'near_ptr', 'far_ptr', 'bg_ptr', 'rgb_ptr',
               'depth_ptr', 'opacity_ptr', 'w_ptr'], planes='*bf16') | ints | {'shift': 'fp32', 'inv_S': 'fp32'}
    common = dict(BLOCK_R=32, C_PAD=32, H_PAD=64, PREC='bf16', EVEN_C=True, FAST=True)
    report('forward (fine pass)', compile_kernel(rt._render_fwd_kernel, fwd, common | dict(STORE_W=False, COLOR=True, STRAT=0), 2))
    report('forward (coarse, jitter)', compile_kernel(rt._render_fwd_kernel, fwd, common | dict(STORE_W=True, COLOR=False, STRAT=2), 2))
    bwd = ptr(['planes', 'W1', 'b1', 'W2', 'b2', 'rays_o', 'rays_d', 't_ptr', 'near_ptr', 'far_ptr', 'g_rgb_ptr', 'g_depth_ptr',
               'g_opac_ptr', 'rgb_ptr', 'depth_ptr', 'opac_ptr', 'bg_ptr', 'e_gw_ptr', 'g_w_ptr', 'g_planes', 'g_W1', 'g_b1',
               'g_W2', 'g_b2'], planes='*bf16') | ints | {'shift': 'fp32'}
    bwd_consts = common | dict(BLOCK_R=16, HAS_GW=False, NEED_PLANES=True, NEED_DEC=True)
    report('backward', compile_kernel(rt._render_bwd_kernel, bwd, bwd_consts, 2))
    imp = ptr(['tc_ptr', 'w_ptr', 'near_ptr', 'far_ptr', 'r_ptr', 'out_ptr']) | {'n_rays': 'i32', 'S': 'i32', 'F': 'i32'}
    report('importance (jitter)', compile_kernel(rt._importance_kernel, imp, dict(BLOCK_R=32, S_CHUNK=64, F_PAD=64, JITTER=True), 1))
    print(f'triton {triton.__version__}, target sm_90', file=sys.stderr)


if __name__ == '__main__': main()
