//! Merkle branches: a transaction's path to its block's merkle root (`get_merkle`,
//! `id_from_pos`), and a header's path to the root of the tree over all block hashes up to a
//! checkpoint (`cp_height` proofs). Both trees are Bitcoin's: double SHA-256, and a level of odd
//! length pairs its last node with itself.

use crate::node::block::sha256d;

pub type Hash = [u8; 32];

fn hash_pair(a: &Hash, b: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    sha256d(&buf)
}

/// The branch of leaf `index` (deepest pairing first) and the root. `levels` fixes the height
/// of the tree, for a subtree of a larger one: a lone node then keeps pairing with itself, as it
/// would inside the larger tree. `None` stops at the natural root.
pub fn branch_and_root(mut level: Vec<Hash>, mut index: usize, levels: Option<usize>) -> (Vec<Hash>, Hash) {
    assert!(index < level.len(), "leaf index out of range");
    let mut branch = Vec::new();
    let mut remaining = levels;
    loop {
        match remaining {
            Some(0) => break,
            None if level.len() == 1 => break,
            _ => {}
        }
        if level.len() % 2 == 1 {
            level.push(*level.last().expect("not empty"));
        }
        branch.push(level[index ^ 1]);
        level = level.chunks(2).map(|p| hash_pair(&p[0], &p[1])).collect();
        index /= 2;
        if let Some(r) = remaining.as_mut() {
            *r -= 1;
        }
    }
    (branch, level[0])
}

/// Headers are proved in chunks of 2^CHUNK_LEVELS block hashes: a complete chunk's root never
/// changes (short of a reorg into it), so it is computed once and cached, and a proof hashes
/// one chunk plus the chunk roots instead of the whole chain.
pub const CHUNK_LEVELS: usize = 10;
pub const CHUNK: usize = 1 << CHUNK_LEVELS;

/// Branch and root proving `hashes[height]` in the tree over all of `hashes` (block hashes
/// 0..=cp_height). `chunk_roots` caches the roots of complete chunks and is extended here.
pub fn header_branch(hashes: &[Hash], height: usize, chunk_roots: &mut Vec<Hash>) -> (Vec<Hash>, Hash) {
    let n = hashes.len();
    if n <= CHUNK {
        return branch_and_root(hashes.to_vec(), height, None);
    }
    let chunk = height / CHUNK;
    let start = chunk * CHUNK;
    let end = n.min(start + CHUNK);
    let (mut branch, _) = branch_and_root(hashes[start..end].to_vec(), height - start, Some(CHUNK_LEVELS));
    let complete = n / CHUNK;
    while chunk_roots.len() < complete {
        let j = chunk_roots.len();
        let (_, root) = branch_and_root(hashes[j * CHUNK..(j + 1) * CHUNK].to_vec(), 0, Some(CHUNK_LEVELS));
        chunk_roots.push(root);
    }
    let mut roots = chunk_roots[..complete].to_vec();
    if n > complete * CHUNK {
        roots.push(branch_and_root(hashes[complete * CHUNK..].to_vec(), 0, Some(CHUNK_LEVELS)).1);
    }
    let (upper, root) = branch_and_root(roots, chunk, None);
    branch.extend(upper);
    (branch, root)
}

/// Folds a branch back up to the root, as a client verifies it.
pub fn root_from_branch(leaf: Hash, mut index: usize, branch: &[Hash]) -> Hash {
    let mut h = leaf;
    for sibling in branch {
        h = if index % 2 == 0 { hash_pair(&h, sibling) } else { hash_pair(sibling, &h) };
        index /= 2;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::block::merkle_root;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| sha256d(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn branches_fold_to_the_block_merkle_root() {
        for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 33] {
            let l = leaves(n);
            let expect = merkle_root(l.clone());
            for i in 0..n {
                let (branch, root) = branch_and_root(l.clone(), i, None);
                assert_eq!(root, expect, "n={n} i={i}");
                assert_eq!(root_from_branch(l[i], i, &branch), expect, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn chunked_header_proofs_match_the_plain_tree() {
        // Sizes around chunk boundaries, with a cache reused across checkpoints as the server does.
        let all = leaves(3 * CHUNK + 17);
        let mut cache = Vec::new();
        for n in [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 3, 3 * CHUNK + 17] {
            let hashes = &all[..n];
            let expect = merkle_root(hashes.to_vec());
            for height in [0, n / 2, n.saturating_sub(2), n - 1] {
                let (branch, root) = header_branch(hashes, height, &mut cache);
                assert_eq!(root, expect, "n={n} height={height}");
                assert_eq!(root_from_branch(hashes[height], height, &branch), expect, "n={n} height={height}");
                let (plain, _) = branch_and_root(hashes.to_vec(), height, None);
                assert_eq!(branch, plain, "n={n} height={height}");
            }
        }
    }
}
