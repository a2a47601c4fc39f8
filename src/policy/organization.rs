//! The organisational-unit map: which accounts each OU holds.
//!
//! AWS Organizations is not called per event (that would cost a call per
//! push and a permission in the management account); the deployment supplies
//! the map as a parameter, and rules name OUs from it.

use std::collections::BTreeMap;

use crate::oci::names::AccountId;

/// Organisational unit (or root) id → its member account ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationalUnits {
    units: BTreeMap<String, Vec<AccountId>>,
}

/// True for `ou-<4-32 of a-z0-9>-<8-32 of a-z0-9>` or `r-<4-32 of a-z0-9>`,
/// the shapes AWS Organizations gives its ids.
pub fn is_organizational_unit_id(s: &str) -> bool {
    let part = |p: &str, min: usize| {
        (min..=32).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split('-').collect::<Vec<_>>().as_slice() {
        ["ou", root, unit] => part(root, 4) && part(unit, 8),
        ["r", root] => part(root, 4),
        _ => false,
    }
}

impl OrganizationalUnits {
    /// Parses `ou-a=111111111111,222222222222;ou-b=333333333333` (blanks
    /// around items ignored). Each unit lists its accounts itself: nesting is
    /// not followed, so a parent OU lists its children's accounts too.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut units: BTreeMap<String, Vec<AccountId>> = BTreeMap::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (ou, accounts) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not OU=ACCOUNT[,ACCOUNT...]"))?;
            let ou = ou.trim();
            if !is_organizational_unit_id(ou) {
                return Err(format!(
                    "{ou:?} is not an organizational unit id (ou-xxxx-yyyyyyyy) or root id (r-xxxx)"
                ));
            }
            let mut list = Vec::new();
            for a in accounts.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                list.push(AccountId::parse(a).map_err(|e| format!("{e} (in {ou})"))?);
            }
            if units.insert(ou.to_owned(), list).is_some() {
                return Err(format!("{ou} is listed twice"));
            }
        }
        Ok(OrganizationalUnits { units })
    }

    /// The accounts of `ou`, if the map has it.
    pub fn accounts(&self, ou: &str) -> Option<&[AccountId]> {
        self.units.get(ou).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_map() {
        let m = OrganizationalUnits::parse(" ou-ab12-cdef3456 = 111111111111, 222222222222 ; r-ab12=333333333333;")
            .unwrap();
        assert_eq!(
            m.accounts("ou-ab12-cdef3456").unwrap(),
            ["111111111111", "222222222222"].map(|a| AccountId::parse(a).unwrap())
        );
        assert_eq!(m.accounts("r-ab12").unwrap().len(), 1);
        assert!(m.accounts("ou-none-00000000").is_none());
        assert_eq!(OrganizationalUnits::parse("").unwrap(), OrganizationalUnits::default());
    }

    #[test]
    fn refuses_what_is_not_a_map() {
        for (bad, says) in [
            ("ou-ab12-cdef3456", "is not OU=ACCOUNT"),
            ("ou-AB12-cdef3456=111111111111", "not an organizational unit id"),
            ("team-a=111111111111", "not an organizational unit id"),
            ("ou-ab12-cdef3456=1111", "12 digits"),
            ("r-ab12=111111111111;r-ab12=222222222222", "twice"),
        ] {
            let e = OrganizationalUnits::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
